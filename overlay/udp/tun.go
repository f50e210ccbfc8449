package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// UDPDeviceName is the TUN device of the udp network with this pool:
// "feltu." and the pool's address in hex, 10.42.0.0/16 -> feltu.0a2a0000,
// 14 characters (the kernel allows 15). Pools of felt networks never
// overlap, so no two share an address.
func UDPDeviceName(pool netip.Prefix) string {
	a := pool.Masked().Addr().As4()
	return fmt.Sprintf("feltu.%02x%02x%02x%02x", a[0], a[1], a[2], a[3])
}

// tunRoute is the route of a peer's subnet into the TUN: no gateway, as a
// TUN has no neighbours; the data path finds the peer by destination.
func tunRoute(dst netip.Prefix, link int) netlink.Route {
	r := peerRoute(dst, netip.Addr{}, link, false)
	r.Scope = netlink.SCOPE_LINK
	return r
}

// configureTUN marks the TUN as n's (OwnerAlias), sets its MTU, leaves
// <subnet .0>/32 as its only IPv4 address and sets it up. The address is the source the kernel picks for
// this host's own traffic to peer subnets: inside the pool, so the peer
// accepts it, and inside this host's subnet, so replies come back.
func (b *udpBackend) configureTUN(link netlink.Link, n Network) error {
	if err := setOwner(b.nl, link, OwnerAlias(b.instance, n.ID)); err != nil {
		return err
	}
	if link.Attrs().MTU != n.MTU {
		if err := b.nl.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("mtu %d: %w", n.MTU, err)
		}
	}
	if err := onlyAddr(b.nl, link, netip.PrefixFrom(n.Subnet.Masked().Addr(), 32)); err != nil {
		return err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := b.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("up: %w", err)
		}
	}
	return nil
}

// onlyAddr leaves want as link's only IPv4 address. The device is felt's,
// so any other address is a leftover (e.g. this host's previous subnet's)
// and would answer for an address that is no longer ours.
func onlyAddr(nl *netlink.Handle, link netlink.Link, want netip.Prefix) error {
	list, err := retryDump(func() ([]netlink.Addr, error) { return nl.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("addresses: %w", err)
	}
	have := false
	for _, a := range list {
		if prefixOf(a.IPNet) == want {
			have = true
			continue
		}
		if err := nl.AddrDel(link, &a); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete old address %s: %w", a.IPNet, err)
		}
	}
	if have {
		return nil
	}
	if err := nl.AddrAdd(link, &netlink.Addr{IPNet: ipNet(want)}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("address %s: %w", want, err)
	}
	return nil
}
