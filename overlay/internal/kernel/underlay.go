package overlay

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// underlay is the interface carrying traffic between hosts, as read from
// the kernel at the start of one Setup or Sync: addresses can change at any
// time, so nothing about it is cached across calls.
type underlay struct {
	link  netlink.Link
	addrs []netip.Prefix // its IPv4 addresses with their prefix lengths
}

func lookupUnderlay(nl *netlink.Handle, host Host) (underlay, error) {
	name, err := host.Name()
	if err != nil {
		return underlay{}, fmt.Errorf("underlay interface: %w", err)
	}
	link, err := nl.LinkByName(name)
	if err != nil {
		return underlay{}, fmt.Errorf("underlay interface %s: %w", name, err)
	}
	list, err := retryDump(func() ([]netlink.Addr, error) { return nl.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return underlay{}, fmt.Errorf("underlay interface %s: addresses: %w", name, err)
	}
	u := underlay{link: link}
	for _, a := range list {
		if a.IPNet != nil {
			u.addrs = append(u.addrs, prefixOf(a.IPNet))
		}
	}
	return u, nil
}

func (u underlay) name() string { return u.link.Attrs().Name }

// direct returns nil when ip sits in a subnet connected to the underlay
// interface, i.e. on the same L2 segment, so a route via ip reaches it in
// one hop; otherwise it says why not. A route via an address that is not
// one hop away would black-hole the subnet behind it.
func (u underlay) direct(ip netip.Addr) error {
	if !ip.IsValid() {
		return errors.New("the lease has no public IP")
	}
	for _, a := range u.addrs {
		if a.Addr() == ip {
			return fmt.Errorf("%s is this host's own address on %s", ip, u.name())
		}
	}
	for _, a := range u.addrs {
		if a.Bits() < 32 && a.Masked().Contains(ip) {
			return nil
		}
	}
	subnets := make([]string, 0, len(u.addrs))
	for _, a := range u.addrs {
		subnets = append(subnets, a.Masked().String())
	}
	if len(subnets) == 0 {
		return fmt.Errorf("%s has no IPv4 address, so no peer is directly reachable", u.name())
	}
	return fmt.Errorf("%s is outside the subnets of %s (%s)", ip, u.name(), strings.Join(subnets, ", "))
}
