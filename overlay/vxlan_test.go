package overlay_test

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/vxlan"
)

// hasTunnel checks h reaches p through the VTEP: neighbour, FDB entry, route.
func hasTunnel(t *testing.T, h, p *tbHost) {
	t.Helper()
	vtep := h.ns.Link(t, vxlan.VTEPName(vni)).Attrs().Index
	n, ok := neighbours(t, h)[p.subnet.Addr()]
	if !ok || n.HardwareAddr.String() != p.mac() || n.State != netlink.NUD_PERMANENT {
		t.Fatalf("%s: neighbour for %s: got %+v, want permanent lladdr %s", h.id, p.subnet.Addr(), n, p.mac())
	}
	if dst, ok := fdb(t, h)[p.mac()]; !ok || dst != p.pub {
		t.Fatalf("%s: fdb %s: got dst %v (present %v), want %s", h.id, p.mac(), dst, ok, p.pub)
	}
	r, ok := feltRoutes(t, h)[p.subnet]
	if !ok || !r.Gw.Equal(net.IP(p.subnet.Addr().AsSlice())) || r.LinkIndex != vtep || r.Flags&int(netlink.FLAG_ONLINK) == 0 {
		t.Fatalf("%s: route %s: got %+v (present %v), want via %s onlink dev %s", h.id, p.subnet, r, ok, p.subnet.Addr(), vxlan.VTEPName(vni))
	}
}

// hasDirect checks h reaches p by a plain route via p's public IP and has
// no tunnel entries for it.
func hasDirect(t *testing.T, h, p *tbHost) {
	t.Helper()
	r, ok := feltRoutes(t, h)[p.subnet]
	eth := h.ns.Link(t, underlayIface).Attrs().Index
	if !ok || !r.Gw.Equal(net.IP(p.pub.AsSlice())) || r.LinkIndex != eth {
		t.Fatalf("%s: route %s: got %+v (present %v), want via %s dev %s", h.id, p.subnet, r, ok, p.pub, underlayIface)
	}
	if _, ok := neighbours(t, h)[p.subnet.Addr()]; ok {
		t.Fatalf("%s: neighbour entry for directly routed peer %s", h.id, p.id)
	}
	if _, ok := fdb(t, h)[p.mac()]; ok {
		t.Fatalf("%s: fdb entry for directly routed peer %s", h.id, p.id)
	}
}

// hasNothing checks h holds no entry at all for p.
func hasNothing(t *testing.T, h, p *tbHost) {
	t.Helper()
	if r, ok := feltRoutes(t, h)[p.subnet]; ok {
		t.Fatalf("%s: route for removed peer %s remains: %+v", h.id, p.id, r)
	}
	if n, ok := neighbours(t, h)[p.subnet.Addr()]; ok {
		t.Fatalf("%s: neighbour for removed peer %s remains: %+v", h.id, p.id, n)
	}
	if dst, ok := fdb(t, h)[p.mac()]; ok {
		t.Fatalf("%s: fdb for removed peer %s remains: dst %s", h.id, p.id, dst)
	}
}

func TestVXLAN(t *testing.T) {
	t.Parallel()
	// a and b share a segment; c is one router away: vxlan reaches both.
	tb := newTestbed(t, "192.168.77.1", "192.168.77.2", "192.168.78.3")
	a, b, c := tb.hosts[0], tb.hosts[1], tb.hosts[2]
	n := a.network("vxlan", false)
	mustNotPing(t, a, b) // the control: nothing connects the hosts yet
	tb.applyAll(t, "vxlan", false)

	t.Run("device", func(t *testing.T) {
		l, ok := a.ns.Link(t, vxlan.VTEPName(vni)).(*netlink.Vxlan)
		if !ok {
			t.Fatalf("%s is not a vxlan device", vxlan.VTEPName(vni))
		}
		if l.VxlanId != vni || l.Port != vxlan.Port || l.Learning || !l.SrcAddr.Equal(net.IP(a.pub.AsSlice())) ||
			l.HardwareAddr.String() != a.mac() || l.MTU != 1450 || l.Attrs().Flags&net.FlagUp == 0 ||
			l.VtepDevIndex != a.ns.Link(t, underlayIface).Attrs().Index {
			t.Fatalf("VTEP: %+v", l)
		}
		if want := overlay.OwnerAlias(a.id, n.ID); l.Attrs().Alias != want {
			t.Fatalf("VTEP alias %q, want the owner mark %q", l.Attrs().Alias, want)
		}
		addrs, err := a.ns.NL.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.42.1.0/32" {
			t.Fatalf("VTEP addresses %v (%v), want only 10.42.1.0/32", addrs, err)
		}
	})

	t.Run("entries", func(t *testing.T) {
		for h, p := range tb.pairs() {
			hasTunnel(t, h, p)
		}
	})

	t.Run("ping", func(t *testing.T) {
		for h, p := range tb.pairs() {
			mustPing(t, h, p)
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		before := a.ns.Link(t, vxlan.VTEPName(vni)).Attrs().Index
		a.apply(t, n, b, c)
		a.apply(t, n, b, c)
		if after := a.ns.Link(t, vxlan.VTEPName(vni)).Attrs().Index; after != before {
			t.Fatalf("Setup recreated a correct VTEP: ifindex %d -> %d", before, after)
		}
		hasTunnel(t, a, b)
		hasTunnel(t, a, c)
	})

	t.Run("peer removed", func(t *testing.T) {
		a.apply(t, n, b)
		hasNothing(t, a, c)
		hasTunnel(t, a, b)
		mustNotPing(t, a, c)
		mustPing(t, a, b)
		a.apply(t, n, b, c)
		hasTunnel(t, a, c)
		mustPing(t, a, c)
	})

	t.Run("VTEP deleted", func(t *testing.T) {
		if err := a.ns.NL.LinkDel(a.ns.Link(t, vxlan.VTEPName(vni))); err != nil {
			t.Fatal(err)
		}
		mustNotPing(t, a, b)
		a.apply(t, n, b, c)
		hasTunnel(t, a, b)
		hasTunnel(t, a, c)
		mustPing(t, a, b)
		mustPing(t, c, a)
	})

	t.Run("VTEP wrong MAC", func(t *testing.T) {
		l := a.ns.Link(t, vxlan.VTEPName(vni))
		if err := a.ns.NL.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x66}); err != nil {
			t.Fatal(err)
		}
		a.apply(t, n, b, c)
		got := a.ns.Link(t, vxlan.VTEPName(vni))
		if got.Attrs().HardwareAddr.String() != a.mac() || got.Attrs().Index == l.Attrs().Index {
			t.Fatalf("VTEP not recreated: mac %s ifindex %d (was %d)", got.Attrs().HardwareAddr, got.Attrs().Index, l.Attrs().Index)
		}
		if !a.logs.contains("recreating VTEP") {
			t.Fatalf("no log of the recreation:\n%s", a.logs)
		}
		mustPing(t, a, b)
	})

	t.Run("VTEP wrong VNI", func(t *testing.T) {
		if err := a.ns.NL.LinkDel(a.ns.Link(t, vxlan.VTEPName(vni))); err != nil {
			t.Fatal(err)
		}
		eth := a.ns.Link(t, underlayIface).Attrs().Index
		wrong := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: vxlan.VTEPName(vni)}, VxlanId: 7, VtepDevIndex: eth, Port: vxlan.Port}
		if err := a.ns.NL.LinkAdd(wrong); err != nil {
			t.Fatal(err)
		}
		a.apply(t, n, b, c)
		if got := a.ns.Link(t, vxlan.VTEPName(vni)).(*netlink.Vxlan); got.VxlanId != vni {
			t.Fatalf("VTEP not recreated: VNI %d", got.VxlanId)
		}
		mustPing(t, a, b)
	})

	t.Run("VTEP local IP changed", func(t *testing.T) {
		// The host's public IP moves to a new address: the VTEP follows.
		a.ns.AddAddr(t, underlayIface, "192.168.77.11/24")
		moved := standardBackends(overlay.BackendConfig{Netlink: a.ns.NL, Host: fakeHost{addr: netip.MustParseAddr("192.168.77.11")}, HostID: a.id})
		if err := moved["vxlan"].Setup(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		got := a.ns.Link(t, vxlan.VTEPName(vni)).(*netlink.Vxlan)
		if got.SrcAddr.String() != "192.168.77.11" {
			t.Fatalf("VTEP local IP %s, want 192.168.77.11", got.SrcAddr)
		}
		a.apply(t, n, b, c) // and back, as the peers still know a at .1
		if got := a.ns.Link(t, vxlan.VTEPName(vni)).(*netlink.Vxlan); !got.SrcAddr.Equal(net.IP(a.pub.AsSlice())) {
			t.Fatalf("VTEP local IP %s, want %s", got.SrcAddr, a.pub)
		}
		mustPing(t, a, c)
	})

	t.Run("stale entries", func(t *testing.T) {
		nl := a.ns.NL
		vtep := a.ns.Link(t, vxlan.VTEPName(vni)).Attrs().Index
		eth := a.ns.Link(t, underlayIface).Attrs().Index
		staleMAC := net.HardwareAddr{0x02, 0, 0, 0, 0x09, 0x09}
		seed := []netlink.Route{
			// felt's protocol, in the pool, no lease: must go.
			{Dst: ipnet("10.42.9.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: overlay.RouteProtocol},
			{Dst: ipnet("10.42.8.0/24"), Gw: net.ParseIP("10.42.8.0"), LinkIndex: vtep, Flags: int(netlink.FLAG_ONLINK), Protocol: overlay.RouteProtocol},
			// Someone else's route in the pool: must stay.
			{Dst: ipnet("10.42.200.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: unix.RTPROT_STATIC},
			// felt's protocol outside the pool (another network): must stay.
			{Dst: ipnet("10.99.0.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: overlay.RouteProtocol},
		}
		for _, r := range seed {
			if err := nl.RouteAdd(&r); err != nil {
				t.Fatalf("seed route %s: %v", r.Dst, err)
			}
		}
		if err := nl.NeighSet(&netlink.Neigh{LinkIndex: vtep, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: net.ParseIP("10.42.9.0"), HardwareAddr: staleMAC}); err != nil {
			t.Fatal(err)
		}
		if err := nl.NeighSet(&netlink.Neigh{LinkIndex: vtep, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, IP: net.ParseIP("192.168.77.99"), HardwareAddr: staleMAC}); err != nil {
			t.Fatal(err)
		}
		// A live peer's FDB entry pointing at a wrong address: must be fixed.
		if err := nl.NeighSet(&netlink.Neigh{LinkIndex: vtep, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, IP: net.ParseIP("192.168.77.98"), HardwareAddr: mustMAC(b.mac())}); err != nil {
			t.Fatal(err)
		}

		a.apply(t, n, b, c)
		checkRoutesPruned(t, a, nl)
		if _, ok := neighbours(t, a)[netip.MustParseAddr("10.42.9.0")]; ok {
			t.Errorf("stale neighbour not removed")
		}
		if dst, ok := fdb(t, a)[staleMAC.String()]; ok {
			t.Errorf("stale fdb entry not removed (dst %s)", dst)
		}
		hasTunnel(t, a, b)
		hasTunnel(t, a, c)
		mustPing(t, a, b)
		if t.Failed() {
			t.Logf("log of %s:\n%s", a.id, a.logs)
		}
	})

	t.Run("teardown", func(t *testing.T) {
		if err := a.b["vxlan"].Teardown(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		if _, err := a.ns.NL.LinkByName(vxlan.VTEPName(vni)); err == nil {
			t.Fatal("VTEP remains after Teardown")
		}
		for dst := range feltRoutes(t, a) {
			if pool.Contains(dst.Addr()) {
				t.Fatalf("route %s remains after Teardown", dst)
			}
		}
		// Idempotent: nothing left to remove is not an error.
		if err := a.b["vxlan"].Teardown(context.Background(), n); err != nil {
			t.Fatalf("second Teardown: %v", err)
		}
		mustNotPing(t, a, b)
	})
}

func TestVXLANDirectRouting(t *testing.T) {
	t.Parallel()
	tb := newTestbed(t, "192.168.77.1", "192.168.77.2", "192.168.78.3")
	a, b, c := tb.hosts[0], tb.hosts[1], tb.hosts[2]
	tb.applyAll(t, "vxlan", true)

	hasDirect(t, a, b)
	hasDirect(t, b, a)
	hasTunnel(t, a, c) // c is in another subnet: tunnel
	hasTunnel(t, c, a)
	hasTunnel(t, c, b)
	for h, p := range tb.pairs() {
		mustPing(t, h, p)
	}

	// Turning directrouting off moves b to the tunnel, and back again.
	a.apply(t, a.network("vxlan", false), b, c)
	hasTunnel(t, a, b)
	mustPing(t, a, b)
	a.apply(t, a.network("vxlan", true), b, c)
	hasDirect(t, a, b)
	mustPing(t, a, b)

	// Teardown also removes the direct routes.
	if err := a.b["vxlan"].Teardown(context.Background(), a.network("vxlan", true)); err != nil {
		t.Fatal(err)
	}
	if routes := feltRoutes(t, a); len(routes) != 0 {
		t.Fatalf("routes remain after Teardown: %v", routes)
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// Teardown deletes the VTEP only when it is the network's: one marked as
// another network's (made with the same VNI after this one was detached,
// while this one's teardown was late) stays; an unmarked one (made by a
// felt that did not mark its devices yet) goes.
func TestVXLANTeardownLeavesAnothersVTEP(t *testing.T) {
	t.Parallel()
	tb := newTestbed(t, "192.168.77.11")
	h := tb.hosts[0]
	ctx := context.Background()
	old := h.network("vxlan", false)
	h.apply(t, old)
	next := old
	next.ID = "net-next"
	h.apply(t, next) // takes the device over (the same VNI and pool)
	if err := h.b["vxlan"].Teardown(ctx, old); err != nil {
		t.Fatal(err)
	}
	if got := h.ns.Link(t, vxlan.VTEPName(vni)).Attrs().Alias; got != overlay.OwnerAlias("host-a", next.ID) {
		t.Fatalf("VTEP alias %q, want %s's", got, next.ID)
	}
	// Unmarked: made by a felt before devices were marked; it goes.
	if err := h.ns.NL.LinkSetAlias(h.ns.Link(t, vxlan.VTEPName(vni)), ""); err != nil {
		t.Fatal(err)
	}
	if err := h.b["vxlan"].Teardown(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ns.NL.LinkByName(vxlan.VTEPName(vni)); err == nil {
		t.Fatal("an unmarked VTEP of the network's name stayed")
	}
}
