package udp_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/udp"
	"github.com/felt-net/felt/overlay/udp/dataplane"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
	"github.com/felt-net/felt/testkit/testbed"
)

var udpDev = udp.DeviceName(testbed.Pool)

// newUDPTestbed is testbed.New with each host's "udp" backend working in the
// host's namespace and the layout the driver makes for udp: bridge and
// container MTU 1472. Every host's udp network is torn down when the test
// ends, before the namespaces go.
func newUDPTestbed(t *testing.T, pubs ...string) *testbed.Bed {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testkit.Unavailable(t, "no /dev/net/tun: %v", err)
	}
	tb := testbed.New(t, pubs...)
	for _, h := range tb.Hosts {
		log := slog.New(slog.NewTextHandler(h.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		h.B["udp"] = udp.New(overlay.BackendConfig{Netlink: h.NS.NL, Host: testbed.NSHost{FakeHost: testbed.FakeHost{IP: h.Pub}, NS: h.NS.Handle}, HostID: h.ID, Log: log})
		mtu := 1500 - h.B["udp"].Overhead()
		for _, l := range []struct {
			ns   *netns.NS
			name string
		}{{h.NS, testbed.Bridge}, {h.NS, "veth0"}, {h.Ctr, "eth0"}} {
			if err := l.ns.NL.LinkSetMTU(l.ns.Link(t, l.name), mtu); err != nil {
				t.Fatalf("%s: mtu %s: %v", h.ID, l.name, err)
			}
		}
		t.Cleanup(func() {
			if err := h.B["udp"].Teardown(context.Background(), h.Network("udp", false)); err != nil {
				t.Errorf("%s: teardown: %v", h.ID, err)
			}
			if t.Failed() {
				t.Logf("log of %s:\n%s", h.ID, h.Logs)
			}
		})
	}
	return tb
}

func udpStats(t *testing.T, h *testbed.Host, n overlay.Network) dataplane.Stats {
	t.Helper()
	s, ok := h.B["udp"].(udp.StatsReporter).Stats(n)
	if !ok {
		t.Fatalf("%s: no udp stats for %s", h.ID, n.ID)
	}
	return s
}

// hasTUNRoute checks h routes p's subnet into its TUN.
func hasTUNRoute(t *testing.T, h, p *testbed.Host) {
	t.Helper()
	tun := h.NS.Link(t, udpDev).Attrs().Index
	r, ok := testbed.FeltRoutes(t, h)[p.Subnet]
	if !ok || r.LinkIndex != tun || r.Gw != nil {
		t.Fatalf("%s: route %s: got %+v (present %v), want dev %s", h.ID, p.Subnet, r, ok, udpDev)
	}
}

// The udp tests are not parallel: the teardown checks look for any udp data
// path goroutine in the process.

func TestUDP(t *testing.T) {
	// a and b share a segment; c is one router away: udp reaches both.
	tb := newUDPTestbed(t, "192.168.77.1", "192.168.77.2", "192.168.78.3")
	a, b, c := tb.Hosts[0], tb.Hosts[1], tb.Hosts[2]
	n := a.Network("udp", false)
	testbed.MustNotPing(t, a, b) // the control: nothing connects the hosts yet
	tb.ApplyAll(t, "udp", false)

	t.Run("device", func(t *testing.T) {
		l := a.NS.Link(t, udpDev)
		if l.Type() != "tuntap" || l.Attrs().MTU != 1472 || l.Attrs().Flags&net.FlagUp == 0 {
			t.Fatalf("TUN %s: type %s mtu %d flags %v", udpDev, l.Type(), l.Attrs().MTU, l.Attrs().Flags)
		}
		if want := overlay.OwnerAlias(a.ID, n.ID); l.Attrs().Alias != want {
			t.Fatalf("TUN %s: alias %q, want the owner mark %q", udpDev, l.Attrs().Alias, want)
		}
		addrs, err := a.NS.NL.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.42.1.0/32" {
			t.Fatalf("TUN addresses %v (%v), want only 10.42.1.0/32", addrs, err)
		}
		for h, p := range tb.Pairs() {
			hasTUNRoute(t, h, p)
		}
	})

	t.Run("ping", func(t *testing.T) {
		for h, p := range tb.Pairs() {
			testbed.MustPing(t, h, p)
		}
		// This host's own traffic leaves from the TUN's address, inside
		// the testbed.Pool, so the peer takes it and the reply finds the way back.
		if err := a.NS.Ping(c.CtrIP(), 2*time.Second); err != nil {
			t.Fatalf("host a to container on c: %v", err)
		}
	})

	t.Run("tcp", func(t *testing.T) {
		before := udpStats(t, a, n)
		transfer(t, a, c, 8<<20)
		transfer(t, c, b, 8<<20)
		after := udpStats(t, a, n)
		if sent := after.TxBytes - before.TxBytes; sent < 8<<20 {
			t.Fatalf("a counted %d bytes sent, want at least %d: %+v", sent, 8<<20, after)
		}
		// TCP super-packets crossed whole: on average far larger than
		// the 1472-byte MTU, which only frames can carry.
		if avg := (after.TxBytes - before.TxBytes) / max(1, after.TxPackets-before.TxPackets); avg < 4*1472 {
			t.Errorf("a sent %d bytes per packet on average: super-packets were cut up before felt", avg)
		}
		if after.Incomplete != before.Incomplete || after.TxDropped != before.TxDropped {
			t.Errorf("frames lost: before %+v after %+v", before, after)
		}
		t.Logf("a: %+v", after)
	})

	t.Run("idempotent", func(t *testing.T) {
		before := a.NS.Link(t, udpDev).Attrs().Index
		a.Apply(t, n, b, c)
		a.Apply(t, n, b, c)
		if after := a.NS.Link(t, udpDev).Attrs().Index; after != before {
			t.Fatalf("Setup recreated a working TUN: ifindex %d -> %d", before, after)
		}
		// Repairs in place what can be: MTU, address, state.
		l := a.NS.Link(t, udpDev)
		if err := a.NS.NL.LinkSetMTU(l, 1300); err != nil {
			t.Fatal(err)
		}
		if err := a.NS.NL.AddrAdd(l, &netlink.Addr{IPNet: testbed.IPNet("10.42.99.0/32")}); err != nil {
			t.Fatal(err)
		}
		a.Apply(t, n, b, c)
		l = a.NS.Link(t, udpDev)
		addrs, _ := a.NS.NL.AddrList(l, netlink.FAMILY_V4)
		if l.Attrs().Index != before || l.Attrs().MTU != 1472 || len(addrs) != 1 {
			t.Fatalf("TUN not repaired in place: ifindex %d mtu %d addrs %v", l.Attrs().Index, l.Attrs().MTU, addrs)
		}
		testbed.MustPing(t, a, b)
	})

	t.Run("MTU raised by hand", func(t *testing.T) {
		// With both ends' TUN MTU raised, TCP between the hosts' own
		// addresses agrees on a 8960-byte MSS. Datagrams are cut to the
		// configured MTU, not the device's: every packet larger than it
		// travels as a frame of several, so the data still arrives
		// intact, without IP fragments on the underlay. Setup puts the
		// MTUs back.
		for _, h := range []*testbed.Host{a, c} {
			if err := h.NS.NL.LinkSetMTU(h.NS.Link(t, udpDev), 9000); err != nil {
				t.Fatal(err)
			}
		}
		before := udpStats(t, a, n)
		transferBetween(t, a.NS, c.NS, c.Subnet.Addr(), 1<<20)
		if after := udpStats(t, a, n); after.TxDropped != before.TxDropped || after.Incomplete != before.Incomplete {
			t.Errorf("packets lost with the MTU raised: before %+v after %+v", before, after)
		}
		if frag := ipFragments(t, c.NS); frag != 0 {
			t.Errorf("c reassembled %d IP fragments: datagrams larger than the underlay MTU were sent", frag)
		}
		a.Apply(t, n, b, c)
		c.Apply(t, c.Network("udp", false), a, b)
		if mtu := a.NS.Link(t, udpDev).Attrs().MTU; mtu != 1472 {
			t.Fatalf("MTU %d after Setup, want 1472", mtu)
		}
		testbed.MustPing(t, a, c)
		transfer(t, a, c, 1<<20)
	})

	t.Run("peer removed", func(t *testing.T) {
		a.Apply(t, n, b)
		if r, ok := testbed.FeltRoutes(t, a)[c.Subnet]; ok {
			t.Fatalf("route to removed peer remains: %+v", r)
		}
		hasTUNRoute(t, a, b)
		testbed.MustNotPing(t, a, c)
		testbed.MustPing(t, a, b)
		a.Apply(t, n, b, c)
		hasTUNRoute(t, a, c)
		testbed.MustPing(t, a, c)
	})

	t.Run("TUN deleted", func(t *testing.T) {
		old := a.NS.Link(t, udpDev)
		if err := a.NS.NL.LinkDel(old); err != nil {
			t.Fatal(err)
		}
		testbed.MustNotPing(t, a, b)
		a.Apply(t, n, b, c)
		if now := a.NS.Link(t, udpDev); now.Attrs().Index == old.Attrs().Index {
			t.Fatalf("TUN not recreated")
		}
		if !a.Logs.Contains("recreating udp tunnel") {
			t.Fatalf("no log of the recreation:\n%s", a.Logs)
		}
		hasTUNRoute(t, a, b)
		hasTUNRoute(t, a, c)
		testbed.MustPing(t, a, b)
		testbed.MustPing(t, c, a)
		transfer(t, b, a, 1<<20)
	})

	t.Run("stale routes", func(t *testing.T) {
		nl := a.NS.NL
		tun := a.NS.Link(t, udpDev).Attrs().Index
		eth := a.NS.Link(t, testbed.UnderlayIface).Attrs().Index
		seed := []netlink.Route{
			// felt's protocol, in the testbed.Pool, no lease: must go.
			{Dst: testbed.IPNet("10.42.9.0/24"), LinkIndex: tun, Scope: netlink.SCOPE_LINK, Protocol: overlay.RouteProtocol},
			{Dst: testbed.IPNet("10.42.8.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: overlay.RouteProtocol},
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
		a.Apply(t, n, b, c)
		testbed.CheckRoutesPruned(t, a, nl)
		hasTUNRoute(t, a, b)
		hasTUNRoute(t, a, c)
		testbed.MustPing(t, a, b)
	})

	t.Run("same testbed.Pool, other network", func(t *testing.T) {
		// Deleted and recreated with the same testbed.Pool, torn down late: the
		// new network waits, and the late Teardown leaves the testbed.Pool alone.
		other := n
		other.ID = "net-udp-old"
		if err := a.B["udp"].Setup(context.Background(), other); err == nil {
			t.Fatal("a second network took over the testbed.Pool's TUN")
		}
		if err := a.B["udp"].Teardown(context.Background(), other); err != nil {
			t.Fatal(err)
		}
		hasTUNRoute(t, a, b)
		testbed.MustPing(t, a, b)
	})

	t.Run("forged datagrams", func(t *testing.T) {
		testForged(t, tb)
	})

	t.Run("teardown", func(t *testing.T) {
		for _, h := range tb.Hosts {
			if err := h.B["udp"].Teardown(context.Background(), h.Network("udp", false)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.NS.NL.LinkByName(udpDev); err == nil {
			t.Fatal("TUN remains after Teardown")
		}
		for dst := range testbed.FeltRoutes(t, a) {
			if testbed.Pool.Contains(dst.Addr()) {
				t.Fatalf("route %s remains after Teardown", dst)
			}
		}
		if _, ok := a.B["udp"].(udp.StatsReporter).Stats(n); ok {
			t.Fatal("stats for a torn down network")
		}
		portFree(t, a.NS, udp.DefaultPort)
		noDataPath(t)
		// Idempotent: nothing left to remove is not an error.
		if err := a.B["udp"].Teardown(context.Background(), n); err != nil {
			t.Fatalf("second Teardown: %v", err)
		}
		testbed.MustNotPing(t, a, b)
	})
}

// testForged sends a's port datagrams it must not deliver, then one it
// must, and checks both the counters and what reached the containers.
func testForged(t *testing.T, tb *testbed.Bed) {
	a, b, c := tb.Hosts[0], tb.Hosts[1], tb.Hosts[2]
	n := a.Network("udp", false)
	const port = 9999
	atA := listenUDP(t, a.Ctr, netip.AddrPortFrom(a.CtrIP(), port))
	atC := listenUDP(t, c.Ctr, netip.AddrPortFrom(c.CtrIP(), port))
	to := netip.AddrPortFrom(a.Pub, udp.DefaultPort)
	before := udpStats(t, a, n)

	// To c's container through a: the port must not relay.
	sendDatagram(t, tb.Underlay, to, udpPacket(b.CtrIP(), c.CtrIP(), port, "relayed"))
	sendDatagram(t, tb.Underlay, to, []byte("not an IP packet"))
	// From outside the testbed.Pool, and from a's own subnet: forgeries.
	sendDatagram(t, tb.Underlay, to, udpPacket(netip.MustParseAddr("192.0.2.1"), a.CtrIP(), port, "outside"))
	sendDatagram(t, tb.Underlay, to, udpPacket(netip.MustParseAddr("10.42.1.7"), a.CtrIP(), port, "own subnet"))
	// The same in frames (frame.go): a forgery cut into two chunks, and
	// a frame header with an unknown flag.
	sendDatagrams(t, tb.Underlay, to, frameChunks(udpPacket(netip.MustParseAddr("192.0.2.1"), a.CtrIP(), port, "framed outside"), 20, 1))
	sendDatagram(t, tb.Underlay, to, append([]byte{0xf1, 0x80, 0, 1, 0, 0, 0, 2}, udpPacket(b.CtrIP(), a.CtrIP(), port, "bad flag")...))
	// Finally good ones, which must arrive, and arrive first: a plain
	// packet, and one cut into three chunks.
	sendDatagram(t, tb.Underlay, to, udpPacket(b.CtrIP(), a.CtrIP(), port, "legit"))
	sendDatagrams(t, tb.Underlay, to, frameChunks(udpPacket(b.CtrIP(), a.CtrIP(), port, "legit in a frame"), 16, 3))

	for _, want := range []string{"legit", "legit in a frame"} {
		if got := readUDP(t, atA, 3*time.Second); got != want {
			t.Fatalf("a's container got %q, want only %q", got, want)
		}
	}
	if got := readUDP(t, atC, 500*time.Millisecond); got != "" {
		t.Fatalf("c's container got %q relayed through a", got)
	}
	var after dataplane.Stats
	deadline := time.Now().Add(3 * time.Second)
	for {
		after = udpStats(t, a, n)
		if after.Unclaimed-before.Unclaimed >= 3 && after.RxDropped-before.RxDropped >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := after.Unclaimed - before.Unclaimed; d != 3 {
		t.Errorf("unclaimed went up by %d, want 3 (relay attempt, garbage, bad frame header): %+v", d, after)
	}
	if d := after.RxDropped - before.RxDropped; d != 3 {
		t.Errorf("rx dropped went up by %d, want 3 (outside the testbed.Pool, own subnet, framed outside): %+v", d, after)
	}
	if d := after.RxPackets - before.RxPackets; d < 2 {
		t.Errorf("rx packets went up by %d, want at least 2: %+v", d, after)
	}
}
