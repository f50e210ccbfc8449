package vxlan_test

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/vxlan"
	"github.com/felt-net/felt/testkit/testbed"
)

// hasTunnel checks h reaches p through the VTEP: neighbour, FDB entry, route.
func hasTunnel(t *testing.T, h, p *testbed.Host) {
	t.Helper()
	vtep := h.NS.Link(t, vxlan.VTEPName(testbed.VNI)).Attrs().Index
	n, ok := testbed.Neighbours(t, h)[p.Subnet.Addr()]
	if !ok || n.HardwareAddr.String() != p.MAC() || n.State != netlink.NUD_PERMANENT {
		t.Fatalf("%s: neighbour for %s: got %+v, want permanent lladdr %s", h.ID, p.Subnet.Addr(), n, p.MAC())
	}
	if dst, ok := testbed.FDB(t, h)[p.MAC()]; !ok || dst != p.Pub {
		t.Fatalf("%s: fdb %s: got dst %v (present %v), want %s", h.ID, p.MAC(), dst, ok, p.Pub)
	}
	r, ok := testbed.FeltRoutes(t, h)[p.Subnet]
	if !ok || !r.Gw.Equal(net.IP(p.Subnet.Addr().AsSlice())) || r.LinkIndex != vtep || r.Flags&int(netlink.FLAG_ONLINK) == 0 {
		t.Fatalf("%s: route %s: got %+v (present %v), want via %s onlink dev %s", h.ID, p.Subnet, r, ok, p.Subnet.Addr(), vxlan.VTEPName(testbed.VNI))
	}
}

// hasDirect checks h reaches p by a plain route via p's public IP and has
// no tunnel entries for it.
func hasDirect(t *testing.T, h, p *testbed.Host) {
	t.Helper()
	r, ok := testbed.FeltRoutes(t, h)[p.Subnet]
	eth := h.NS.Link(t, testbed.UnderlayIface).Attrs().Index
	if !ok || !r.Gw.Equal(net.IP(p.Pub.AsSlice())) || r.LinkIndex != eth {
		t.Fatalf("%s: route %s: got %+v (present %v), want via %s dev %s", h.ID, p.Subnet, r, ok, p.Pub, testbed.UnderlayIface)
	}
	if _, ok := testbed.Neighbours(t, h)[p.Subnet.Addr()]; ok {
		t.Fatalf("%s: neighbour entry for directly routed peer %s", h.ID, p.ID)
	}
	if _, ok := testbed.FDB(t, h)[p.MAC()]; ok {
		t.Fatalf("%s: fdb entry for directly routed peer %s", h.ID, p.ID)
	}
}

// hasNothing checks h holds no entry at all for p.
func hasNothing(t *testing.T, h, p *testbed.Host) {
	t.Helper()
	if r, ok := testbed.FeltRoutes(t, h)[p.Subnet]; ok {
		t.Fatalf("%s: route for removed peer %s remains: %+v", h.ID, p.ID, r)
	}
	if n, ok := testbed.Neighbours(t, h)[p.Subnet.Addr()]; ok {
		t.Fatalf("%s: neighbour for removed peer %s remains: %+v", h.ID, p.ID, n)
	}
	if dst, ok := testbed.FDB(t, h)[p.MAC()]; ok {
		t.Fatalf("%s: fdb for removed peer %s remains: dst %s", h.ID, p.ID, dst)
	}
}

func TestVXLAN(t *testing.T) {
	t.Parallel()
	// a and b share a segment; c is one router away: vxlan reaches both.
	tb := testbed.New(t, "192.168.77.1", "192.168.77.2", "192.168.78.3")
	a, b, c := tb.Hosts[0], tb.Hosts[1], tb.Hosts[2]
	n := a.Network("vxlan", false)
	testbed.MustNotPing(t, a, b) // the control: nothing connects the hosts yet
	tb.ApplyAll(t, "vxlan", false)

	t.Run("device", func(t *testing.T) {
		l, ok := a.NS.Link(t, vxlan.VTEPName(testbed.VNI)).(*netlink.Vxlan)
		if !ok {
			t.Fatalf("%s is not a vxlan device", vxlan.VTEPName(testbed.VNI))
		}
		if l.VxlanId != testbed.VNI || l.Port != vxlan.Port || l.Learning || !l.SrcAddr.Equal(net.IP(a.Pub.AsSlice())) ||
			l.HardwareAddr.String() != a.MAC() || l.MTU != 1450 || l.Attrs().Flags&net.FlagUp == 0 ||
			l.VtepDevIndex != a.NS.Link(t, testbed.UnderlayIface).Attrs().Index {
			t.Fatalf("VTEP: %+v", l)
		}
		if want := overlay.OwnerAlias(a.ID, n.ID); l.Attrs().Alias != want {
			t.Fatalf("VTEP alias %q, want the owner mark %q", l.Attrs().Alias, want)
		}
		addrs, err := a.NS.NL.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.42.1.0/32" {
			t.Fatalf("VTEP addresses %v (%v), want only 10.42.1.0/32", addrs, err)
		}
	})

	t.Run("entries", func(t *testing.T) {
		for h, p := range tb.Pairs() {
			hasTunnel(t, h, p)
		}
	})

	t.Run("ping", func(t *testing.T) {
		for h, p := range tb.Pairs() {
			testbed.MustPing(t, h, p)
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		before := a.NS.Link(t, vxlan.VTEPName(testbed.VNI)).Attrs().Index
		a.Apply(t, n, b, c)
		a.Apply(t, n, b, c)
		if after := a.NS.Link(t, vxlan.VTEPName(testbed.VNI)).Attrs().Index; after != before {
			t.Fatalf("Setup recreated a correct VTEP: ifindex %d -> %d", before, after)
		}
		hasTunnel(t, a, b)
		hasTunnel(t, a, c)
	})

	t.Run("peer removed", func(t *testing.T) {
		a.Apply(t, n, b)
		hasNothing(t, a, c)
		hasTunnel(t, a, b)
		testbed.MustNotPing(t, a, c)
		testbed.MustPing(t, a, b)
		a.Apply(t, n, b, c)
		hasTunnel(t, a, c)
		testbed.MustPing(t, a, c)
	})

	t.Run("VTEP deleted", func(t *testing.T) {
		if err := a.NS.NL.LinkDel(a.NS.Link(t, vxlan.VTEPName(testbed.VNI))); err != nil {
			t.Fatal(err)
		}
		testbed.MustNotPing(t, a, b)
		a.Apply(t, n, b, c)
		hasTunnel(t, a, b)
		hasTunnel(t, a, c)
		testbed.MustPing(t, a, b)
		testbed.MustPing(t, c, a)
	})

	t.Run("VTEP wrong MAC", func(t *testing.T) {
		l := a.NS.Link(t, vxlan.VTEPName(testbed.VNI))
		if err := a.NS.NL.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x66}); err != nil {
			t.Fatal(err)
		}
		a.Apply(t, n, b, c)
		got := a.NS.Link(t, vxlan.VTEPName(testbed.VNI))
		if got.Attrs().HardwareAddr.String() != a.MAC() || got.Attrs().Index == l.Attrs().Index {
			t.Fatalf("VTEP not recreated: mac %s ifindex %d (was %d)", got.Attrs().HardwareAddr, got.Attrs().Index, l.Attrs().Index)
		}
		if !a.Logs.Contains("recreating VTEP") {
			t.Fatalf("no log of the recreation:\n%s", a.Logs)
		}
		testbed.MustPing(t, a, b)
	})

	t.Run("VTEP wrong VNI", func(t *testing.T) {
		if err := a.NS.NL.LinkDel(a.NS.Link(t, vxlan.VTEPName(testbed.VNI))); err != nil {
			t.Fatal(err)
		}
		eth := a.NS.Link(t, testbed.UnderlayIface).Attrs().Index
		wrong := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: vxlan.VTEPName(testbed.VNI)}, VxlanId: 7, VtepDevIndex: eth, Port: vxlan.Port}
		if err := a.NS.NL.LinkAdd(wrong); err != nil {
			t.Fatal(err)
		}
		a.Apply(t, n, b, c)
		if got := a.NS.Link(t, vxlan.VTEPName(testbed.VNI)).(*netlink.Vxlan); got.VxlanId != testbed.VNI {
			t.Fatalf("VTEP not recreated: VNI %d", got.VxlanId)
		}
		testbed.MustPing(t, a, b)
	})

	t.Run("VTEP local IP changed", func(t *testing.T) {
		// The host's public IP moves to a new address: the VTEP follows.
		a.NS.AddAddr(t, testbed.UnderlayIface, "192.168.77.11/24")
		moved := testbed.StandardBackends(overlay.BackendConfig{Netlink: a.NS.NL, Host: testbed.FakeHost{IP: netip.MustParseAddr("192.168.77.11")}, HostID: a.ID})
		if err := moved["vxlan"].Setup(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		got := a.NS.Link(t, vxlan.VTEPName(testbed.VNI)).(*netlink.Vxlan)
		if got.SrcAddr.String() != "192.168.77.11" {
			t.Fatalf("VTEP local IP %s, want 192.168.77.11", got.SrcAddr)
		}
		a.Apply(t, n, b, c) // and back, as the peers still know a at .1
		if got := a.NS.Link(t, vxlan.VTEPName(testbed.VNI)).(*netlink.Vxlan); !got.SrcAddr.Equal(net.IP(a.Pub.AsSlice())) {
			t.Fatalf("VTEP local IP %s, want %s", got.SrcAddr, a.Pub)
		}
		testbed.MustPing(t, a, c)
	})

	t.Run("stale entries", func(t *testing.T) {
		nl := a.NS.NL
		vtep := a.NS.Link(t, vxlan.VTEPName(testbed.VNI)).Attrs().Index
		eth := a.NS.Link(t, testbed.UnderlayIface).Attrs().Index
		staleMAC := net.HardwareAddr{0x02, 0, 0, 0, 0x09, 0x09}
		seed := []netlink.Route{
			// felt's protocol, in the testbed.Pool, no lease: must go.
			{Dst: testbed.IPNet("10.42.9.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: overlay.RouteProtocol},
			{Dst: testbed.IPNet("10.42.8.0/24"), Gw: net.ParseIP("10.42.8.0"), LinkIndex: vtep, Flags: int(netlink.FLAG_ONLINK), Protocol: overlay.RouteProtocol},
			// Someone else's route in the testbed.Pool: must stay.
			{Dst: testbed.IPNet("10.42.200.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: unix.RTPROT_STATIC},
			// felt's protocol outside the testbed.Pool (another network): must stay.
			{Dst: testbed.IPNet("10.99.0.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: overlay.RouteProtocol},
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
			State: netlink.NUD_PERMANENT, IP: net.ParseIP("192.168.77.98"), HardwareAddr: mustMAC(b.MAC())}); err != nil {
			t.Fatal(err)
		}

		a.Apply(t, n, b, c)
		testbed.CheckRoutesPruned(t, a, nl)
		if _, ok := testbed.Neighbours(t, a)[netip.MustParseAddr("10.42.9.0")]; ok {
			t.Errorf("stale neighbour not removed")
		}
		if dst, ok := testbed.FDB(t, a)[staleMAC.String()]; ok {
			t.Errorf("stale fdb entry not removed (dst %s)", dst)
		}
		hasTunnel(t, a, b)
		hasTunnel(t, a, c)
		testbed.MustPing(t, a, b)
		if t.Failed() {
			t.Logf("log of %s:\n%s", a.ID, a.Logs)
		}
	})

	// A sync skips the entries the kernel holds already; one after entries
	// changed under it (a neighbour's MAC, a deleted route) still repairs
	// exactly them.
	t.Run("repairs what differs", func(t *testing.T) {
		nl := a.NS.NL
		a.Apply(t, n, b, c)
		vtep := a.NS.Link(t, vxlan.VTEPName(testbed.VNI)).Attrs().Index
		if err := nl.NeighSet(&netlink.Neigh{LinkIndex: vtep, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: net.IP(b.Subnet.Addr().AsSlice()), HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0x07, 0x07}}); err != nil {
			t.Fatal(err)
		}
		r, ok := testbed.FeltRoutes(t, a)[c.Subnet]
		if !ok {
			t.Fatalf("no route to %s", c.Subnet)
		}
		if err := nl.RouteDel(&r); err != nil {
			t.Fatal(err)
		}
		a.Apply(t, n, b, c)
		hasTunnel(t, a, b)
		hasTunnel(t, a, c)
		testbed.MustPing(t, a, b)
		testbed.MustPing(t, a, c)
	})

	t.Run("teardown", func(t *testing.T) {
		if err := a.B["vxlan"].Teardown(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		if _, err := a.NS.NL.LinkByName(vxlan.VTEPName(testbed.VNI)); err == nil {
			t.Fatal("VTEP remains after Teardown")
		}
		for dst := range testbed.FeltRoutes(t, a) {
			if testbed.Pool.Contains(dst.Addr()) {
				t.Fatalf("route %s remains after Teardown", dst)
			}
		}
		// Idempotent: nothing left to remove is not an error.
		if err := a.B["vxlan"].Teardown(context.Background(), n); err != nil {
			t.Fatalf("second Teardown: %v", err)
		}
		testbed.MustNotPing(t, a, b)
	})
}

func TestVXLANDirectRouting(t *testing.T) {
	t.Parallel()
	tb := testbed.New(t, "192.168.77.1", "192.168.77.2", "192.168.78.3")
	a, b, c := tb.Hosts[0], tb.Hosts[1], tb.Hosts[2]
	tb.ApplyAll(t, "vxlan", true)

	hasDirect(t, a, b)
	hasDirect(t, b, a)
	hasTunnel(t, a, c) // c is in another subnet: tunnel
	hasTunnel(t, c, a)
	hasTunnel(t, c, b)
	for h, p := range tb.Pairs() {
		testbed.MustPing(t, h, p)
	}

	// Turning directrouting off moves b to the tunnel, and back again.
	a.Apply(t, a.Network("vxlan", false), b, c)
	hasTunnel(t, a, b)
	testbed.MustPing(t, a, b)
	a.Apply(t, a.Network("vxlan", true), b, c)
	hasDirect(t, a, b)
	testbed.MustPing(t, a, b)

	// Teardown also removes the direct routes.
	if err := a.B["vxlan"].Teardown(context.Background(), a.Network("vxlan", true)); err != nil {
		t.Fatal(err)
	}
	if routes := testbed.FeltRoutes(t, a); len(routes) != 0 {
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
	tb := testbed.New(t, "192.168.77.11")
	h := tb.Hosts[0]
	ctx := context.Background()
	old := h.Network("vxlan", false)
	h.Apply(t, old)
	next := old
	next.ID = "net-next"
	h.Apply(t, next) // takes the device over (the same VNI and testbed.Pool)
	if err := h.B["vxlan"].Teardown(ctx, old); err != nil {
		t.Fatal(err)
	}
	if got := h.NS.Link(t, vxlan.VTEPName(testbed.VNI)).Attrs().Alias; got != overlay.OwnerAlias("host-a", next.ID) {
		t.Fatalf("VTEP alias %q, want %s's", got, next.ID)
	}
	// Unmarked: made by a felt before devices were marked; it goes.
	if err := h.NS.NL.LinkSetAlias(h.NS.Link(t, vxlan.VTEPName(testbed.VNI)), ""); err != nil {
		t.Fatal(err)
	}
	if err := h.B["vxlan"].Teardown(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := h.NS.NL.LinkByName(vxlan.VTEPName(testbed.VNI)); err == nil {
		t.Fatal("an unmarked VTEP of the network's name stayed")
	}
}

// A lease whose VTEP MAC is none, a group address or the all-zero one
// (the VTEP's default destination) is refused; a unicast MAC is not.
func TestCheckPeerDataRefusesUnusableMACs(t *testing.T) {
	b := &vxlan.Backend{}
	for mac, ok := range map[string]bool{
		"02:42:0a:2a:01:00":       true,
		"":                        false,
		"not-a-mac":               false,
		"ff:ff:ff:ff:ff:ff":       false,
		"01:00:5e:00:00:01":       false,
		"00:00:00:00:00:00":       false,
		"02:42:0a:2a:01:00:00:00": false,
	} {
		l := lease.Lease{HostID: "h2", Subnet: netip.MustParsePrefix("10.42.2.0/24"), BackendData: json.RawMessage(`{"vtepMAC":` + strconv.Quote(mac) + `}`)}
		if err := b.CheckPeerData(overlay.Network{}, l); (err == nil) != ok {
			t.Errorf("VTEP MAC %q: CheckPeerData = %v, want accepted %t", mac, err, ok)
		}
	}
}
