package nlerr

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestIsNotFound(t *testing.T) {
	// netlink's LinkNotFoundError cannot be made with a message outside its
	// package (and its zero value cannot print): cases are named.
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"LinkNotFoundError", netlink.LinkNotFoundError{}, true},
		{"wrapped LinkNotFoundError", wrap{netlink.LinkNotFoundError{}}, true},
		// LinkDel by index of a link that went answers ENODEV, as a
		// syscall.Errno: the "link fv…: delete: no such device" of issue 14.
		{"ENODEV", syscall.ENODEV, true},
		{"wrapped ENODEV", fmt.Errorf("link fv1: delete: %w", unix.ENODEV), true},
		// With netlink's error message reporting on, the errno comes
		// wrapped with the kernel's message.
		{"ENOENT with a message", fmt.Errorf("%w: %s", unix.ENOENT, "no such neighbour"), true},
		{"ESRCH", unix.ESRCH, true},
		{"EEXIST", unix.EEXIST, false},
		{"EPERM", unix.EPERM, false},
		{"the text alone", errors.New("no such device"), false},
	} {
		if got := IsNotFound(c.err); got != c.want {
			t.Errorf("IsNotFound(%s) = %v, want %v", c.name, got, c.want)
		}
	}
}

// wrap wraps an error without printing it.
type wrap struct{ err error }

func (w wrap) Error() string { return "wrapped" }
func (w wrap) Unwrap() error { return w.err }
