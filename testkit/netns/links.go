package netns

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

// Link returns the link called name in the namespace.
func (ns *NS) Link(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := ns.NL.LinkByName(name)
	if err != nil {
		t.Fatalf("netns %s: link %s: %v", ns.Name, name, err)
	}
	return l
}

// Up sets the link called name up.
func (ns *NS) Up(t testing.TB, name string) {
	t.Helper()
	if err := ns.NL.LinkSetUp(ns.Link(t, name)); err != nil {
		t.Fatalf("netns %s: up %s: %v", ns.Name, name, err)
	}
}

// Veth joins two namespaces with a veth pair, aName in a and bName in b,
// both up. Each end is created directly in its namespace, so the names only
// need to be unique there; the pair dies with either namespace.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(b.Handle)}
	if err := a.NL.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v", a.Name, aName, b.Name, bName, err)
	}
	a.Up(t, aName)
	b.Up(t, bName)
}

// Bridge creates an up bridge called name.
func (ns *NS) Bridge(t testing.TB, name string) {
	t.Helper()
	if err := ns.NL.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Fatalf("netns %s: bridge %s: %v", ns.Name, name, err)
	}
	ns.Up(t, name)
}

// SetMaster enslaves the link called port to the bridge called bridge.
func (ns *NS) SetMaster(t testing.TB, port, bridge string) {
	t.Helper()
	if err := ns.NL.LinkSetMaster(ns.Link(t, port), ns.Link(t, bridge)); err != nil {
		t.Fatalf("netns %s: %s master %s: %v", ns.Name, port, bridge, err)
	}
}

// AddAddr adds an address in CIDR form ("10.42.1.1/24") to the link.
func (ns *NS) AddAddr(t testing.TB, link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatalf("address %s: %v", cidr, err)
	}
	if err := ns.NL.AddrAdd(ns.Link(t, link), a); err != nil {
		t.Fatalf("netns %s: address %s on %s: %v", ns.Name, cidr, link, err)
	}
}

// AddRoute adds a route to dst (CIDR, or "default") via gw.
func (ns *NS) AddRoute(t testing.TB, dst string, gw netip.Addr) {
	t.Helper()
	r := &netlink.Route{Gw: net.IP(gw.AsSlice())}
	if dst != "default" {
		p, err := netip.ParsePrefix(dst)
		if err != nil {
			t.Fatalf("route %s: %v", dst, err)
		}
		r.Dst = &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	if err := ns.NL.RouteAdd(r); err != nil {
		t.Fatalf("netns %s: route %s via %s: %v", ns.Name, dst, gw, err)
	}
}
