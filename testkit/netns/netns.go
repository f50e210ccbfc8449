// Package netns builds throwaway network namespaces for tests that need a
// real kernel: the overlay backends' tests, and integration tests that wire
// several "hosts" together.
//
// Every namespace is named (so `ip netns exec NAME ...` works), gets a
// netlink handle bound to it, and is deleted by t.Cleanup when the test ends,
// whether it passed or not. Links live inside namespaces only — Veth creates
// each end directly in its namespace — so deleting the namespaces removes
// every link a test made and the root namespace is never touched.
//
// Namespaces are created with the ip(8) tool ("ip netns add"), the one
// outside command this package needs; everything else goes through netlink.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/testkit"
)

// NS is a named network namespace with a netlink handle bound to it.
type NS struct {
	Name   string         // as listed by `ip netns`
	Handle netns.NsHandle // open fd of the namespace
	NL     *netlink.Handle
}

var counter atomic.Uint64 // makes names unique within one test binary

// Require skips (or, with CI=true, fails: testkit.Unavailable) t unless it
// runs as root with the ip tool installed. New calls it; call it first to
// skip before other setup.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testkit.Unavailable(t, "network namespaces unavailable: not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testkit.Unavailable(t, "network namespaces unavailable: ip tool not found: %v", err)
	}
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// Name returns a namespace name unique to this process and call, readable
// back to the test that made it (so a leftover after a crash is traceable).
func Name(t testing.TB, base string) string {
	test := unsafeChars.ReplaceAllString(t.Name(), "_")
	if len(test) > 60 {
		test = test[:60]
	}
	return fmt.Sprintf("felt-%s-%d-%d-%s", test, os.Getpid(), counter.Add(1), base)
}

// New creates a namespace for t, with lo up, and registers its deletion.
func New(t testing.TB, base string) *NS {
	t.Helper()
	Require(t)
	name := Name(t, base)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testkit.Unavailable(t, "network namespaces unavailable: ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	ns := &NS{Name: name}
	// Registered before anything else can fail, so the namespace never leaks.
	t.Cleanup(func() { ns.close(t) })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("netns %s: open: %v", name, err)
	}
	ns.Handle = h
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netns %s: netlink handle: %v", name, err)
	}
	ns.NL = nl
	ns.Up(t, "lo")
	return ns
}

// close releases the handles (which keep the namespace alive) and deletes it.
func (ns *NS) close(t testing.TB) {
	if ns.NL != nil {
		ns.NL.Close()
	}
	if ns.Handle.IsOpen() {
		ns.Handle.Close()
	}
	if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
		t.Errorf("cleanup: ip netns del %s: %v: %s", ns.Name, err, strings.TrimSpace(string(out)))
	}
}

// Do runs fn on an OS thread switched into the namespace. Sockets opened in
// fn stay in the namespace after Do returns.
func (ns *NS) Do(fn func() error) error { return nsutil.Do(ns.Handle, fn) }

// Run runs a command inside the namespace (`ip netns exec`) and returns its
// combined output, trimmed (testkit.Run).
func (ns *NS) Run(name string, args ...string) (string, error) {
	out, err := testkit.Run(testkit.NetNSExec(ns.Name, append([]string{name}, args...)...)...)
	if err != nil {
		return out, fmt.Errorf("netns %s: %s %s: %w: %s", ns.Name, name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// MustRun is Run failing t on error.
func (ns *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Sysctl sets a sysctl inside the namespace, e.g. ("net.ipv4.ip_forward",
// "1"). /proc/sys/net follows the namespace of the thread that opens it, so
// no sysctl binary is needed.
func (ns *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	err := ns.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) })
	if err != nil {
		t.Fatalf("netns %s: sysctl %s=%s: %v", ns.Name, key, value, err)
	}
}
