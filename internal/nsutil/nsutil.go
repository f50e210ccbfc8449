// Package nsutil runs code inside a network namespace. Netlink calls take a
// handle bound to a namespace instead; this is for what cannot, such as
// executing iptables, whose child process inherits the calling thread's
// namespace.
package nsutil

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on a thread switched into ns; a closed (zero) handle means the
// current namespace, and fn simply runs.
func Do(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it is in the wrong namespace and must
		// die with this goroutine rather than run other code.
		return fmt.Errorf("return from netns: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}
