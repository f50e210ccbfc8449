package udp

import (
	"fmt"
	"net"
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

// configureTUN marks the TUN as n's (OwnerAlias), sets its MTU, leaves
// <subnet .0>/32 as its only IPv4 address and sets it up. The address is the source the kernel picks for
// this host's own traffic to peer subnets: inside the pool, so the peer
// accepts it, and inside this host's subnet, so replies come back.
func (b *Backend) configureTUN(link netlink.Link, n overlay.Network) error {
	if err := overlay.SetOwner(b.cfg.Netlink, link, overlay.OwnerAlias(b.cfg.Instance, n.ID)); err != nil {
		return err
	}
	if link.Attrs().MTU != n.MTU {
		if err := b.cfg.Netlink.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("mtu %d: %w", n.MTU, err)
		}
	}
	if err := kernel.OnlyAddr(b.cfg.Netlink, link, netip.PrefixFrom(n.Subnet.Masked().Addr(), 32)); err != nil {
		return err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := b.cfg.Netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("up: %w", err)
		}
	}
	return nil
}
