package udp

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// DeviceName is the TUN device of the udp network with this pool:
// "feltu." and the pool's address in hex, 10.42.0.0/16 -> feltu.0a2a0000,
// 14 characters (the kernel allows 15). Pools of felt networks never
// overlap, so no two share an address.
func DeviceName(pool netip.Prefix) string {
	a := pool.Masked().Addr().As4()
	return fmt.Sprintf("feltu.%02x%02x%02x%02x", a[0], a[1], a[2], a[3])
}

// tunRoute is the route of a peer's subnet into the TUN: no gateway, as a
// TUN has no neighbours; the data path finds the peer by destination.
func tunRoute(dst netip.Prefix, link int) netlink.Route {
	r := kernel.PeerRoute(dst, netip.Addr{}, link, false)
	r.Scope = netlink.SCOPE_LINK
	return r
}

// configureTUN marks the TUN as n's, sets its MTU, address and state
// (overlay.ConfigureTunnelDevice).
func (b *Backend) configureTUN(link netlink.Link, n overlay.Network) error {
	return overlay.ConfigureTunnelDevice(b.cfg.Netlink, link, b.cfg.Instance, n)
}
