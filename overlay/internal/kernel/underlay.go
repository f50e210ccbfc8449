package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// Underlay is the interface carrying traffic between hosts, as read from
// the kernel at the start of one Setup or Sync: addresses can change at any
// time, so nothing about it is cached across calls.
type Underlay struct {
	Link  netlink.Link
	addrs []netip.Prefix // its IPv4 addresses with their prefix lengths
}

// Named is the part of overlay.Host that finds the underlay interface.
type Named interface {
	Name() (string, error)
}

// LookupUnderlay reads host's underlay interface and its IPv4 addresses.
func LookupUnderlay(nl *netlink.Handle, host Named) (Underlay, error) {
	name, err := host.Name()
	if err != nil {
		return Underlay{}, fmt.Errorf("underlay interface: %w", err)
	}
	link, err := nl.LinkByName(name)
	if err != nil {
		return Underlay{}, fmt.Errorf("underlay interface %s: %w", name, err)
	}
	list, err := RetryDump(func() ([]netlink.Addr, error) { return nl.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return Underlay{}, fmt.Errorf("underlay interface %s: addresses: %w", name, err)
	}
	u := Underlay{Link: link}
	for _, a := range list {
		if a.IPNet != nil {
			u.addrs = append(u.addrs, PrefixOf(a.IPNet))
		}
	}
	return u, nil
}

// Name is the interface's name.
func (u Underlay) Name() string { return u.Link.Attrs().Name }

// Direct returns nil when ip sits in a subnet connected to the underlay
// interface, i.e. on the same L2 segment, so a route via ip reaches it in
// one hop; otherwise it says why not. A route via an address that is not
// one hop away would black-hole the subnet behind it.
func (u Underlay) Direct(ip netip.Addr) error {
	if !ip.IsValid() {
		return errors.New("the lease has no public IP")
	}
	for _, a := range u.addrs {
		if a.Addr() == ip {
			return fmt.Errorf("%s is this host's own address on %s", ip, u.Name())
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
		return fmt.Errorf("%s has no IPv4 address, so no peer is directly reachable", u.Name())
	}
	return fmt.Errorf("%s is outside the subnets of %s (%s)", ip, u.Name(), strings.Join(subnets, ", "))
}
