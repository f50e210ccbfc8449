package names

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
)

// EnsureAddress puts addr/32 on lo, labelled lo:felt (felt's mark), so
// that felt can listen on it and the host does not route it out of its
// default route. It stays there when felt stops or DNS is off: a query
// then gets a port unreachable at once instead of leaking to the network.
// (This kernel family may lack the dummy link type, hence lo.)
func EnsureAddress(nl *netlink.Handle, addr netip.Addr) error {
	lo, err := nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("FELT_DNS=%s: finding lo: %w", addr, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: "lo:felt"}
	if err := nl.AddrAdd(lo, a); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("FELT_DNS=%s: adding %s/32 to lo: %w", addr, addr, err)
	}
	return nil
}
