package overlay_test

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/testkit/netns"
)

// The testbed is a few "hosts", each a network namespace, whose eth0 is
// plugged into a bridge in an "underlay" namespace. The underlay also routes
// between 192.168.77.0/24 and 192.168.78.0/24, so a host in the other
// subnet is reachable by IP but not on the same L2 segment. Each host has a
// bridge holding its subnet's gateway (.1) and one "container" namespace
// (.2) behind a veth on it, routing the pool via the gateway: the layout the
// driver builds. Every address is inside these namespaces.

var pool = netip.MustParsePrefix("10.42.0.0/16")

const (
	underlayIface = "eth0"
	bridge        = "br-felt"
	vni           = 1
)

type testbed struct {
	underlay *netns.NS
	hosts    []*tbHost
}

type tbHost struct {
	id     string
	ns     *netns.NS // the host
	ctr    *netns.NS // a container on the host's bridge
	pub    netip.Addr
	subnet netip.Prefix
	logs   *syncBuffer
	b      map[string]overlay.Backend
}

// fakeHost answers the Host questions for one testbed host.
type fakeHost struct{ addr netip.Addr }

func (h fakeHost) Addr() (netip.Addr, error) { return h.addr, nil }
func (h fakeHost) MTU() (int, error)         { return 1500, nil }
func (h fakeHost) Name() (string, error)     { return underlayIface, nil }

// newTestbed builds one host per public IP; host i leases 10.42.(i+1).0/24.
func newTestbed(t *testing.T, pubs ...string) *testbed {
	t.Helper()
	tb := &testbed{underlay: netns.New(t, "u")}
	u := tb.underlay
	u.Sysctl(t, "net.ipv4.ip_forward", "1")
	// No ICMP redirects: hosts in different subnets must keep going
	// through the router, as they would in a real routed underlay.
	u.Sysctl(t, "net.ipv4.conf.all.send_redirects", "0")
	u.Sysctl(t, "net.ipv4.conf.default.send_redirects", "0")
	u.Bridge(t, "br0")
	u.AddAddr(t, "br0", "192.168.77.254/24")
	u.AddAddr(t, "br0", "192.168.78.254/24")
	for i, pub := range pubs {
		h := &tbHost{
			id:     fmt.Sprintf("host-%c", 'a'+i),
			pub:    netip.MustParseAddr(pub),
			subnet: netip.MustParsePrefix(fmt.Sprintf("10.42.%d.0/24", i+1)),
			logs:   &syncBuffer{},
		}
		h.ns = netns.New(t, h.id)
		h.ns.Sysctl(t, "net.ipv4.ip_forward", "1")
		port := fmt.Sprintf("p%d", i)
		netns.Veth(t, h.ns, underlayIface, u, port)
		u.SetMaster(t, port, "br0")
		h.ns.AddAddr(t, underlayIface, pub+"/24")
		router := netip.PrefixFrom(h.pub, 24).Masked().Addr().As4()
		router[3] = 254
		h.ns.AddRoute(t, "default", netip.AddrFrom4(router))

		h.ns.Bridge(t, bridge)
		h.ns.AddAddr(t, bridge, h.gateway().String()+"/24")
		h.ctr = netns.New(t, h.id+"-ctr")
		netns.Veth(t, h.ns, "veth0", h.ctr, "eth0")
		h.ns.SetMaster(t, "veth0", bridge)
		h.ctr.AddAddr(t, "eth0", h.ctrIP().String()+"/24")
		h.ctr.AddRoute(t, pool.String(), h.gateway())

		log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		h.b = overlay.NewBackends(overlay.BackendConfig{Netlink: h.ns.NL, Host: fakeHost{addr: h.pub}, HostID: h.id, Log: log})
		tb.hosts = append(tb.hosts, h)
	}
	return tb
}

func (h *tbHost) gateway() netip.Addr { return h.subnet.Addr().Next() }
func (h *tbHost) ctrIP() netip.Addr   { return h.gateway().Next() }
func (h *tbHost) mac() string         { return overlay.VtepMAC(h.id, pool).String() }

func (h *tbHost) lease() lease.Lease {
	return lease.Lease{Pool: pool, Subnet: h.subnet, HostID: h.id, PublicIP: h.pub, VtepMAC: h.mac()}
}

func (h *tbHost) network(backend string, direct bool) overlay.Network {
	return overlay.Network{ID: "net-" + backend, Pool: pool, Subnet: h.subnet, Bridge: bridge,
		Backend: backend, VNI: vni, MTU: 1500 - overlay.Overhead(backend), DirectRouting: direct}
}

// leases returns the leases of hosts.
func leases(hosts ...*tbHost) []lease.Lease {
	var out []lease.Lease
	for _, h := range hosts {
		out = append(out, h.lease())
	}
	return out
}

// others returns every host of tb but h.
func (tb *testbed) others(h *tbHost) []*tbHost {
	var out []*tbHost
	for _, o := range tb.hosts {
		if o != h {
			out = append(out, o)
		}
	}
	return out
}

// pairs yields every ordered pair of distinct hosts: a host, then a peer.
func (tb *testbed) pairs() iter.Seq2[*tbHost, *tbHost] {
	return func(yield func(*tbHost, *tbHost) bool) {
		for _, h := range tb.hosts {
			for _, p := range tb.others(h) {
				if !yield(h, p) {
					return
				}
			}
		}
	}
}

// apply runs Setup then Sync on h, as the Manager does, failing t on error.
func (h *tbHost) apply(t *testing.T, n overlay.Network, peers ...*tbHost) {
	t.Helper()
	if err := h.try(n, peers...); err != nil {
		t.Fatalf("%s: %v", h.id, err)
	}
}

func (h *tbHost) try(n overlay.Network, peers ...*tbHost) error {
	b := h.b[n.Backend]
	ctx := context.Background()
	if err := b.Setup(ctx, n); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if err := b.Sync(ctx, n, leases(peers...)); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// applyAll programs every host with all the others as peers.
func (tb *testbed) applyAll(t *testing.T, backend string, direct bool) {
	t.Helper()
	for _, h := range tb.hosts {
		h.apply(t, h.network(backend, direct), tb.others(h)...)
	}
}

// mustPing checks real traffic from one host's container to another's; a
// few tries absorb ARP resolution on the way.
func mustPing(t *testing.T, from, to *tbHost) {
	t.Helper()
	var err error
	for range 5 {
		if err = from.ctr.Ping(to.ctrIP(), time.Second); err == nil {
			return
		}
	}
	t.Fatalf("container on %s cannot reach container on %s: %v", from.id, to.id, err)
}

func mustNotPing(t *testing.T, from, to *tbHost) {
	t.Helper()
	if err := from.ctr.Ping(to.ctrIP(), time.Second); err == nil {
		t.Fatalf("container on %s still reaches container on %s", from.id, to.id)
	}
}

// feltRoutes returns felt's routes (by protocol) by destination.
func feltRoutes(t *testing.T, h *tbHost) map[netip.Prefix]netlink.Route {
	t.Helper()
	list, err := h.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatalf("%s: routes: %v", h.id, err)
	}
	out := map[netip.Prefix]netlink.Route{}
	for _, r := range list {
		out[prefix(r.Dst)] = r
	}
	return out
}

// neighbours returns the VTEP's IPv4 neighbour entries, address -> MAC.
func neighbours(t *testing.T, h *tbHost) map[netip.Addr]netlink.Neigh {
	t.Helper()
	list, err := h.ns.NL.NeighList(h.ns.Link(t, overlay.VTEPName(vni)).Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("%s: neighbours: %v", h.id, err)
	}
	out := map[netip.Addr]netlink.Neigh{}
	for _, n := range list {
		a, _ := netip.AddrFromSlice(n.IP)
		out[a.Unmap()] = n
	}
	return out
}

// fdb returns the VTEP's unicast FDB entries, MAC -> destination.
func fdb(t *testing.T, h *tbHost) map[string]netip.Addr {
	t.Helper()
	list, err := h.ns.NL.NeighList(h.ns.Link(t, overlay.VTEPName(vni)).Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatalf("%s: fdb: %v", h.id, err)
	}
	out := map[string]netip.Addr{}
	for _, n := range list {
		if len(n.HardwareAddr) == 6 && n.HardwareAddr[0]&1 == 0 {
			a, _ := netip.AddrFromSlice(n.IP)
			out[n.HardwareAddr.String()] = a.Unmap()
		}
	}
	return out
}

func prefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func ipnet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) contains(sub string) bool { return strings.Contains(s.String(), sub) }

// checkRoutesPruned checks what the stale-entry tests seed: felt's stale
// routes 10.42.9.0/24 and 10.42.8.0/24 are gone, while felt's route outside
// the pool (10.99.0.0/24) and someone else's route in it (10.42.200.0/24)
// stay.
func checkRoutesPruned(t *testing.T, h *tbHost, nl *netlink.Handle) {
	t.Helper()
	routes := feltRoutes(t, h)
	for _, gone := range []string{"10.42.9.0/24", "10.42.8.0/24"} {
		if _, ok := routes[netip.MustParsePrefix(gone)]; ok {
			t.Errorf("stale route %s not removed", gone)
		}
	}
	if _, ok := routes[netip.MustParsePrefix("10.99.0.0/24")]; !ok {
		t.Errorf("route outside the pool was removed")
	}
	all, err := nl.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range all {
		found = found || (r.Dst != nil && r.Dst.String() == "10.42.200.0/24")
	}
	if !found {
		t.Errorf("someone else's route 10.42.200.0/24 was removed")
	}
}
