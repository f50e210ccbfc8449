// Package nlerr reads the kernel's netlink answers that mean "already
// gone": the one test the driver and the overlay share for making deletes
// idempotent.
package nlerr

import (
	"errors"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IsNotFound reports the kernel's "nothing there" answers to a lookup or a
// delete of a link, route, neighbour or address: netlink's
// LinkNotFoundError (a lookup by name), ENODEV (a link by index, or the
// device of a route or address, is gone), ENOENT (a neighbour or FDB entry)
// and ESRCH (a route). Whatever was to be deleted vanished between felt's
// lookup and its delete (deleted by hand, by Docker's own cleanup, or by
// the kernel taking a veth's peer along when its namespace went), so a
// delete that gets one has done its job.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}
