// Package kernel holds the kernel helpers the overlay's manager and its
// backends share: address conversions (netaddr.go), felt's routes
// (RouteProtocol, routes.go), the underlay interface (underlay.go), and a
// link's only address (OnlyAddr, addr.go). Deletes take "already gone" for
// done with internal/nlerr, which the driver shares.
package kernel

import (
	"net"
	"net/netip"
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

// Within reports whether p lies entirely inside pool.
func Within(p, pool netip.Prefix) bool {
	return p.IsValid() && p.Bits() >= pool.Bits() && pool.Contains(p.Addr())
}
