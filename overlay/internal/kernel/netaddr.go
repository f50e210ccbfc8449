// Package kernel holds the kernel helpers the overlay's manager and its
// backends share: address conversions and idempotent deletes (netaddr.go),
// felt's routes (RouteProtocol, routes.go), the underlay interface
// (underlay.go), and a link's only address (OnlyAddr, addr.go).
package kernel

import (
	"errors"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PrefixOf converts a net.IPNet (what netlink speaks) to a netip.Prefix
// (what felt speaks), keeping the address as given (not masked).
func PrefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func IPOf(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func AddrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// within reports whether p lies entirely inside pool.
func Within(p, pool netip.Prefix) bool {
	return p.IsValid() && p.Bits() >= pool.Bits() && pool.Contains(p.Addr())
}

// IsNotFound reports the kernel's "nothing to delete" answers, which an
// idempotent delete treats as success.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV)
}
