package plugin

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Underlay describes the interface carrying traffic between hosts: the one
// named by FELT_IFACE, else the one holding the default route. It is looked
// up on every use, so an address change is picked up by the next renewal.
type Underlay struct {
	Iface    string
	PublicIP netip.Addr // override (FELT_PUBLIC_IP)
	Netlink  *netlink.Handle
}

func (u Underlay) link() (netlink.Link, error) {
	if u.Iface != "" {
		l, err := u.Netlink.LinkByName(u.Iface)
		if err != nil {
			return nil, fmt.Errorf("FELT_IFACE=%s: %w", u.Iface, err)
		}
		return l, nil
	}
	routes, err := u.Netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.LinkIndex > 0 {
			return u.Netlink.LinkByIndex(r.LinkIndex)
		}
	}
	return nil, errors.New("no default route to find the underlay interface: set FELT_IFACE")
}

// Addr is this host's public IP: the override, else the interface's first
// global IPv4 address.
func (u Underlay) Addr() (netip.Addr, error) {
	if u.PublicIP.IsValid() {
		return u.PublicIP, nil
	}
	l, err := u.link()
	if err != nil {
		return netip.Addr{}, err
	}
	addrs, err := u.Netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && ip.IsGlobalUnicast() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address: set FELT_PUBLIC_IP or FELT_IFACE", l.Attrs().Name)
}

// MTU is the underlay interface's MTU.
func (u Underlay) MTU() (int, error) {
	l, err := u.link()
	if err != nil {
		return 0, err
	}
	return l.Attrs().MTU, nil
}

// Name is the underlay interface's name.
func (u Underlay) Name() (string, error) {
	l, err := u.link()
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}
