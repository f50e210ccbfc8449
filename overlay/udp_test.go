package overlay_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/udp"
	"github.com/felt-net/felt/testkit"
	testnet "github.com/felt-net/felt/testkit/netns"
)

// nsHost is a testbed host as the udp backend needs it: naming its
// namespace, where the backend opens its TUN device and socket.
type nsHost struct {
	fakeHost
	ns netns.NsHandle
}

func (h nsHost) NetNS() netns.NsHandle { return h.ns }

var udpDev = overlay.UDPDeviceName(pool)

// newUDPTestbed is newTestbed with each host's "udp" backend working in the
// host's namespace and the layout the driver makes for udp: bridge and
// container MTU 1472. Every host's udp network is torn down when the test
// ends, before the namespaces go.
func newUDPTestbed(t *testing.T, pubs ...string) *testbed {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testkit.Unavailable(t, "no /dev/net/tun: %v", err)
	}
	tb := newTestbed(t, pubs...)
	for _, h := range tb.hosts {
		log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		h.b["udp"] = overlay.NewBackends(overlay.BackendConfig{Netlink: h.ns.NL, Host: nsHost{fakeHost{addr: h.pub}, h.ns.Handle}, HostID: h.id, Log: log})["udp"]
		mtu := 1500 - overlay.Overhead("udp")
		for _, l := range []struct {
			ns   *testnet.NS
			name string
		}{{h.ns, bridge}, {h.ns, "veth0"}, {h.ctr, "eth0"}} {
			if err := l.ns.NL.LinkSetMTU(l.ns.Link(t, l.name), mtu); err != nil {
				t.Fatalf("%s: mtu %s: %v", h.id, l.name, err)
			}
		}
		t.Cleanup(func() {
			if err := h.b["udp"].Teardown(context.Background(), h.network("udp", false)); err != nil {
				t.Errorf("%s: teardown: %v", h.id, err)
			}
			if t.Failed() {
				t.Logf("log of %s:\n%s", h.id, h.logs)
			}
		})
	}
	return tb
}

func udpStats(t *testing.T, h *tbHost, n overlay.Network) udp.Stats {
	t.Helper()
	s, ok := h.b["udp"].(overlay.UDPStatsReporter).Stats(n)
	if !ok {
		t.Fatalf("%s: no udp stats for %s", h.id, n.ID)
	}
	return s
}

// hasTUNRoute checks h routes p's subnet into its TUN.
func hasTUNRoute(t *testing.T, h, p *tbHost) {
	t.Helper()
	tun := h.ns.Link(t, udpDev).Attrs().Index
	r, ok := feltRoutes(t, h)[p.subnet]
	if !ok || r.LinkIndex != tun || r.Gw != nil {
		t.Fatalf("%s: route %s: got %+v (present %v), want dev %s", h.id, p.subnet, r, ok, udpDev)
	}
}

// The udp tests are not parallel: the teardown checks look for any udp data
// path goroutine in the process.

func TestUDP(t *testing.T) {
	// a and b share a segment; c is one router away: udp reaches both.
	tb := newUDPTestbed(t, "192.168.77.1", "192.168.77.2", "192.168.78.3")
	a, b, c := tb.hosts[0], tb.hosts[1], tb.hosts[2]
	n := a.network("udp", false)
	mustNotPing(t, a, b) // the control: nothing connects the hosts yet
	tb.applyAll(t, "udp", false)

	t.Run("device", func(t *testing.T) {
		l := a.ns.Link(t, udpDev)
		if l.Type() != "tuntap" || l.Attrs().MTU != 1472 || l.Attrs().Flags&net.FlagUp == 0 {
			t.Fatalf("TUN %s: type %s mtu %d flags %v", udpDev, l.Type(), l.Attrs().MTU, l.Attrs().Flags)
		}
		if want := overlay.OwnerAlias(a.id, n.ID); l.Attrs().Alias != want {
			t.Fatalf("TUN %s: alias %q, want the owner mark %q", udpDev, l.Attrs().Alias, want)
		}
		addrs, err := a.ns.NL.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.42.1.0/32" {
			t.Fatalf("TUN addresses %v (%v), want only 10.42.1.0/32", addrs, err)
		}
		for h, p := range tb.pairs() {
			hasTUNRoute(t, h, p)
		}
	})

	t.Run("ping", func(t *testing.T) {
		for h, p := range tb.pairs() {
			mustPing(t, h, p)
		}
		// This host's own traffic leaves from the TUN's address, inside
		// the pool, so the peer takes it and the reply finds the way back.
		if err := a.ns.Ping(c.ctrIP(), 2*time.Second); err != nil {
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
		before := a.ns.Link(t, udpDev).Attrs().Index
		a.apply(t, n, b, c)
		a.apply(t, n, b, c)
		if after := a.ns.Link(t, udpDev).Attrs().Index; after != before {
			t.Fatalf("Setup recreated a working TUN: ifindex %d -> %d", before, after)
		}
		// Repairs in place what can be: MTU, address, state.
		l := a.ns.Link(t, udpDev)
		if err := a.ns.NL.LinkSetMTU(l, 1300); err != nil {
			t.Fatal(err)
		}
		if err := a.ns.NL.AddrAdd(l, &netlink.Addr{IPNet: ipnet("10.42.99.0/32")}); err != nil {
			t.Fatal(err)
		}
		a.apply(t, n, b, c)
		l = a.ns.Link(t, udpDev)
		addrs, _ := a.ns.NL.AddrList(l, netlink.FAMILY_V4)
		if l.Attrs().Index != before || l.Attrs().MTU != 1472 || len(addrs) != 1 {
			t.Fatalf("TUN not repaired in place: ifindex %d mtu %d addrs %v", l.Attrs().Index, l.Attrs().MTU, addrs)
		}
		mustPing(t, a, b)
	})

	t.Run("MTU raised by hand", func(t *testing.T) {
		// With both ends' TUN MTU raised, TCP between the hosts' own
		// addresses agrees on a 8960-byte MSS. Datagrams are cut to the
		// configured MTU, not the device's: every packet larger than it
		// travels as a frame of several, so the data still arrives
		// intact, without IP fragments on the underlay. Setup puts the
		// MTUs back.
		for _, h := range []*tbHost{a, c} {
			if err := h.ns.NL.LinkSetMTU(h.ns.Link(t, udpDev), 9000); err != nil {
				t.Fatal(err)
			}
		}
		before := udpStats(t, a, n)
		transferBetween(t, a.ns, c.ns, c.subnet.Addr(), 1<<20)
		if after := udpStats(t, a, n); after.TxDropped != before.TxDropped || after.Incomplete != before.Incomplete {
			t.Errorf("packets lost with the MTU raised: before %+v after %+v", before, after)
		}
		if frag := ipFragments(t, c.ns); frag != 0 {
			t.Errorf("c reassembled %d IP fragments: datagrams larger than the underlay MTU were sent", frag)
		}
		a.apply(t, n, b, c)
		c.apply(t, c.network("udp", false), a, b)
		if mtu := a.ns.Link(t, udpDev).Attrs().MTU; mtu != 1472 {
			t.Fatalf("MTU %d after Setup, want 1472", mtu)
		}
		mustPing(t, a, c)
		transfer(t, a, c, 1<<20)
	})

	t.Run("peer removed", func(t *testing.T) {
		a.apply(t, n, b)
		if r, ok := feltRoutes(t, a)[c.subnet]; ok {
			t.Fatalf("route to removed peer remains: %+v", r)
		}
		hasTUNRoute(t, a, b)
		mustNotPing(t, a, c)
		mustPing(t, a, b)
		a.apply(t, n, b, c)
		hasTUNRoute(t, a, c)
		mustPing(t, a, c)
	})

	t.Run("TUN deleted", func(t *testing.T) {
		old := a.ns.Link(t, udpDev)
		if err := a.ns.NL.LinkDel(old); err != nil {
			t.Fatal(err)
		}
		mustNotPing(t, a, b)
		a.apply(t, n, b, c)
		if now := a.ns.Link(t, udpDev); now.Attrs().Index == old.Attrs().Index {
			t.Fatalf("TUN not recreated")
		}
		if !a.logs.contains("recreating udp tunnel") {
			t.Fatalf("no log of the recreation:\n%s", a.logs)
		}
		hasTUNRoute(t, a, b)
		hasTUNRoute(t, a, c)
		mustPing(t, a, b)
		mustPing(t, c, a)
		transfer(t, b, a, 1<<20)
	})

	t.Run("stale routes", func(t *testing.T) {
		nl := a.ns.NL
		tun := a.ns.Link(t, udpDev).Attrs().Index
		eth := a.ns.Link(t, underlayIface).Attrs().Index
		seed := []netlink.Route{
			// felt's protocol, in the pool, no lease: must go.
			{Dst: ipnet("10.42.9.0/24"), LinkIndex: tun, Scope: netlink.SCOPE_LINK, Protocol: overlay.RouteProtocol},
			{Dst: ipnet("10.42.8.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: overlay.RouteProtocol},
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
		a.apply(t, n, b, c)
		checkRoutesPruned(t, a, nl)
		hasTUNRoute(t, a, b)
		hasTUNRoute(t, a, c)
		mustPing(t, a, b)
	})

	t.Run("same pool, other network", func(t *testing.T) {
		// Deleted and recreated with the same pool, torn down late: the
		// new network waits, and the late Teardown leaves the pool alone.
		other := n
		other.ID = "net-udp-old"
		if err := a.b["udp"].Setup(context.Background(), other); err == nil {
			t.Fatal("a second network took over the pool's TUN")
		}
		if err := a.b["udp"].Teardown(context.Background(), other); err != nil {
			t.Fatal(err)
		}
		hasTUNRoute(t, a, b)
		mustPing(t, a, b)
	})

	t.Run("forged datagrams", func(t *testing.T) {
		testForged(t, tb)
	})

	t.Run("teardown", func(t *testing.T) {
		for _, h := range tb.hosts {
			if err := h.b["udp"].Teardown(context.Background(), h.network("udp", false)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.ns.NL.LinkByName(udpDev); err == nil {
			t.Fatal("TUN remains after Teardown")
		}
		for dst := range feltRoutes(t, a) {
			if pool.Contains(dst.Addr()) {
				t.Fatalf("route %s remains after Teardown", dst)
			}
		}
		if _, ok := a.b["udp"].(overlay.UDPStatsReporter).Stats(n); ok {
			t.Fatal("stats for a torn down network")
		}
		portFree(t, a.ns, lease.DefaultUDPPort)
		noDataPath(t)
		// Idempotent: nothing left to remove is not an error.
		if err := a.b["udp"].Teardown(context.Background(), n); err != nil {
			t.Fatalf("second Teardown: %v", err)
		}
		mustNotPing(t, a, b)
	})
}

// testForged sends a's port datagrams it must not deliver, then one it
// must, and checks both the counters and what reached the containers.
func testForged(t *testing.T, tb *testbed) {
	a, b, c := tb.hosts[0], tb.hosts[1], tb.hosts[2]
	n := a.network("udp", false)
	const port = 9999
	atA := listenUDP(t, a.ctr, netip.AddrPortFrom(a.ctrIP(), port))
	atC := listenUDP(t, c.ctr, netip.AddrPortFrom(c.ctrIP(), port))
	to := netip.AddrPortFrom(a.pub, lease.DefaultUDPPort)
	before := udpStats(t, a, n)

	// To c's container through a: the port must not relay.
	sendDatagram(t, tb.underlay, to, udpPacket(b.ctrIP(), c.ctrIP(), port, "relayed"))
	sendDatagram(t, tb.underlay, to, []byte("not an IP packet"))
	// From outside the pool, and from a's own subnet: forgeries.
	sendDatagram(t, tb.underlay, to, udpPacket(netip.MustParseAddr("192.0.2.1"), a.ctrIP(), port, "outside"))
	sendDatagram(t, tb.underlay, to, udpPacket(netip.MustParseAddr("10.42.1.7"), a.ctrIP(), port, "own subnet"))
	// The same in frames (frame.go): a forgery cut into two chunks, and
	// a frame header with an unknown flag.
	sendDatagrams(t, tb.underlay, to, frameChunks(udpPacket(netip.MustParseAddr("192.0.2.1"), a.ctrIP(), port, "framed outside"), 20, 1))
	sendDatagram(t, tb.underlay, to, append([]byte{0xf1, 0x80, 0, 1, 0, 0, 0, 2}, udpPacket(b.ctrIP(), a.ctrIP(), port, "bad flag")...))
	// Finally good ones, which must arrive, and arrive first: a plain
	// packet, and one cut into three chunks.
	sendDatagram(t, tb.underlay, to, udpPacket(b.ctrIP(), a.ctrIP(), port, "legit"))
	sendDatagrams(t, tb.underlay, to, frameChunks(udpPacket(b.ctrIP(), a.ctrIP(), port, "legit in a frame"), 16, 3))

	for _, want := range []string{"legit", "legit in a frame"} {
		if got := readUDP(t, atA, 3*time.Second); got != want {
			t.Fatalf("a's container got %q, want only %q", got, want)
		}
	}
	if got := readUDP(t, atC, 500*time.Millisecond); got != "" {
		t.Fatalf("c's container got %q relayed through a", got)
	}
	var after udp.Stats
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
		t.Errorf("rx dropped went up by %d, want 3 (outside the pool, own subnet, framed outside): %+v", d, after)
	}
	if d := after.RxPackets - before.RxPackets; d < 2 {
		t.Errorf("rx packets went up by %d, want at least 2: %+v", d, after)
	}
}
