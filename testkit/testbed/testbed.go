// Package testbed builds the network namespaces the overlay's tests
// (overlay/..., its backends and its Manager) run in. The testbed is a few "hosts", each a
// network namespace, whose eth0 is plugged into a bridge in an "underlay"
// namespace. The underlay also routes between 192.168.77.0/24 and
// 192.168.78.0/24, so a host in the other subnet is reachable by IP but not
// on the same L2 segment. Each host has a bridge holding its subnet's
// gateway (.1) and one "container" namespace (.2) behind a veth on it,
// routing the pool via the gateway: the layout the driver builds. Every
// address is inside these namespaces.
package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/backends"
	"github.com/felt-net/felt/overlay/vxlan"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
)

// Pool is the overlay pool of every testbed network.
var Pool = netip.MustParsePrefix("10.42.0.0/16")

// The testbed's names: every host's underlay interface and bridge, and
// the VNI of its vxlan networks.
const (
	UnderlayIface = "eth0"
	Bridge        = "br-felt"
	VNI           = 1
)

// Bed is the underlay namespace and the hosts on it.
type Bed struct {
	Underlay *netns.NS
	Hosts    []*Host
}

// Host is one testbed host: its namespace, its container, its public IP,
// its subnet, its log and its backends by name.
type Host struct {
	ID     string
	NS     *netns.NS // the host
	Ctr    *netns.NS // a container on the host's bridge
	Pub    netip.Addr
	Subnet netip.Prefix
	Logs   *testkit.LogBuffer
	B      map[string]overlay.Backend
}

// FakeHost answers the Host questions for one testbed host.
type FakeHost struct{ IP netip.Addr }

func (h FakeHost) Addr() (netip.Addr, error) { return h.IP, nil }
func (h FakeHost) MTU() (int, error)         { return 1500, nil }
func (h FakeHost) Name() (string, error)     { return UnderlayIface, nil }

// New builds one host per public IP; host i leases 10.42.(i+1).0/24.
func New(t testing.TB, pubs ...string) *Bed {
	t.Helper()
	tb := &Bed{Underlay: netns.New(t, "u")}
	u := tb.Underlay
	u.Sysctl(t, "net.ipv4.ip_forward", "1")
	// No ICMP redirects: hosts in different subnets must keep going
	// through the router, as they would in a real routed underlay.
	u.Sysctl(t, "net.ipv4.conf.all.send_redirects", "0")
	u.Sysctl(t, "net.ipv4.conf.default.send_redirects", "0")
	u.Bridge(t, "br0")
	u.AddAddr(t, "br0", "192.168.77.254/24")
	u.AddAddr(t, "br0", "192.168.78.254/24")
	for i, pub := range pubs {
		h := &Host{
			ID:     fmt.Sprintf("host-%c", 'a'+i),
			Pub:    netip.MustParseAddr(pub),
			Subnet: netip.MustParsePrefix(fmt.Sprintf("10.42.%d.0/24", i+1)),
			Logs:   &testkit.LogBuffer{},
		}
		h.NS = netns.New(t, h.ID)
		h.NS.Sysctl(t, "net.ipv4.ip_forward", "1")
		port := fmt.Sprintf("p%d", i)
		netns.Veth(t, h.NS, UnderlayIface, u, port)
		u.SetMaster(t, port, "br0")
		h.NS.AddAddr(t, UnderlayIface, pub+"/24")
		router := netip.PrefixFrom(h.Pub, 24).Masked().Addr().As4()
		router[3] = 254
		h.NS.AddRoute(t, "default", netip.AddrFrom4(router))

		h.NS.Bridge(t, Bridge)
		h.NS.AddAddr(t, Bridge, h.Gateway().String()+"/24")
		h.Ctr = netns.New(t, h.ID+"-ctr")
		netns.Veth(t, h.NS, "veth0", h.Ctr, "eth0")
		h.NS.SetMaster(t, "veth0", Bridge)
		h.Ctr.AddAddr(t, "eth0", h.CtrIP().String()+"/24")
		h.Ctr.AddRoute(t, Pool.String(), h.Gateway())

		log := slog.New(slog.NewTextHandler(h.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		h.B = StandardBackends(overlay.BackendConfig{Netlink: h.NS.NL, Host: FakeHost{IP: h.Pub}, HostID: h.ID, Log: log})
		tb.Hosts = append(tb.Hosts, h)
	}
	return tb
}

// Gateway is h's bridge address, CtrIP its container's, MAC its VTEP MAC.
func (h *Host) Gateway() netip.Addr { return h.Subnet.Addr().Next() }
func (h *Host) CtrIP() netip.Addr   { return h.Gateway().Next() }
func (h *Host) MAC() string         { return vxlan.VtepMAC(h.ID, Pool).String() }

// LeaseData is the backend data of h's lease, as plugin.Build's owner
// publishes it: the merged data of every backend.
func (h *Host) LeaseData() json.RawMessage {
	data, err := RegistryOf(h.B).LeaseData(Pool)
	if err != nil {
		panic(err)
	}
	return data
}

// Lease is h's lease, as its IPAM takes it.
func (h *Host) Lease() lease.Lease {
	return lease.Lease{Pool: Pool, Subnet: h.Subnet, HostID: h.ID, PublicIP: h.Pub, BackendData: h.LeaseData()}
}

// StandardBackends are felt's backends (backends.All) by name, for tests
// that replace one of them with a wrapper.
func StandardBackends(cfg overlay.BackendConfig) map[string]overlay.Backend {
	reg := backends.All(cfg)
	out := map[string]overlay.Backend{}
	for _, name := range reg.Names() {
		out[name], _ = reg.Get(name)
	}
	return out
}

// RegistryOf registers the backends of m (by name, so in a fixed order).
func RegistryOf(m map[string]overlay.Backend) *overlay.Backends {
	var bs []overlay.Backend
	for _, name := range slices.Sorted(maps.Keys(m)) {
		bs = append(bs, m[name])
	}
	return overlay.NewBackends(bs...)
}

// Network is h's network of backend, as the driver passes it.
func (h *Host) Network(backend string, direct bool) overlay.Network {
	return overlay.Network{ID: "net-" + backend, Pool: Pool, Subnet: h.Subnet, Bridge: Bridge,
		Backend: backend, VNI: VNI, MTU: 1500 - h.B[backend].Overhead(), DirectRouting: direct}
}

// Leases returns the leases of hosts.
func Leases(hosts ...*Host) []lease.Lease {
	var out []lease.Lease
	for _, h := range hosts {
		out = append(out, h.Lease())
	}
	return out
}

// Others returns every host of tb but h.
func (tb *Bed) Others(h *Host) []*Host {
	var out []*Host
	for _, o := range tb.Hosts {
		if o != h {
			out = append(out, o)
		}
	}
	return out
}

// Pairs yields every ordered pair of distinct hosts: a host, then a peer.
func (tb *Bed) Pairs() iter.Seq2[*Host, *Host] {
	return func(yield func(*Host, *Host) bool) {
		for _, h := range tb.Hosts {
			for _, p := range tb.Others(h) {
				if !yield(h, p) {
					return
				}
			}
		}
	}
}

// Apply runs Setup then Sync on h, as the Manager does, failing t on error.
func (h *Host) Apply(t testing.TB, n overlay.Network, peers ...*Host) {
	t.Helper()
	if err := h.Try(n, peers...); err != nil {
		t.Fatalf("%s: %v", h.ID, err)
	}
}

// Try is Apply returning the error.
func (h *Host) Try(n overlay.Network, peers ...*Host) error {
	b := h.B[n.Backend]
	ctx := context.Background()
	if err := b.Setup(ctx, n); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if err := b.Sync(ctx, n, Leases(peers...)); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// ApplyAll programs every host with all the others as peers.
func (tb *Bed) ApplyAll(t testing.TB, backend string, direct bool) {
	t.Helper()
	for _, h := range tb.Hosts {
		h.Apply(t, h.Network(backend, direct), tb.Others(h)...)
	}
}

// MustPing checks real traffic from one host's container to another's; a
// few tries absorb ARP resolution on the way.
func MustPing(t testing.TB, from, to *Host) {
	t.Helper()
	if err := from.Ctr.PingTries(to.CtrIP(), 5, time.Second); err != nil {
		t.Fatalf("container on %s cannot reach container on %s: %v", from.ID, to.ID, err)
	}
}

// MustNotPing checks from's container no longer reaches to's.
func MustNotPing(t testing.TB, from, to *Host) {
	t.Helper()
	if err := from.Ctr.Ping(to.CtrIP(), time.Second); err == nil {
		t.Fatalf("container on %s still reaches container on %s", from.ID, to.ID)
	}
}

// FeltRoutes returns felt's routes (by protocol) by destination.
func FeltRoutes(t testing.TB, h *Host) map[netip.Prefix]netlink.Route {
	t.Helper()
	list, err := h.NS.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatalf("%s: routes: %v", h.ID, err)
	}
	out := map[netip.Prefix]netlink.Route{}
	for _, r := range list {
		out[Prefix(r.Dst)] = r
	}
	return out
}

// Neighbours returns the VTEP's IPv4 neighbour entries, address -> MAC.
func Neighbours(t testing.TB, h *Host) map[netip.Addr]netlink.Neigh {
	t.Helper()
	list, err := h.NS.NL.NeighList(h.NS.Link(t, vxlan.VTEPName(VNI)).Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("%s: neighbours: %v", h.ID, err)
	}
	out := map[netip.Addr]netlink.Neigh{}
	for _, n := range list {
		a, _ := netip.AddrFromSlice(n.IP)
		out[a.Unmap()] = n
	}
	return out
}

// FDB returns the VTEP's unicast FDB entries, MAC -> destination.
func FDB(t testing.TB, h *Host) map[string]netip.Addr {
	t.Helper()
	list, err := h.NS.NL.NeighList(h.NS.Link(t, vxlan.VTEPName(VNI)).Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatalf("%s: fdb: %v", h.ID, err)
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

// Prefix converts what netlink gives, IPNet what netlink takes.
func Prefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func IPNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// CheckRoutesPruned checks what the stale-entry tests seed: felt's stale
// routes 10.42.9.0/24 and 10.42.8.0/24 are gone, while felt's route outside
// the pool (10.99.0.0/24) and someone else's route in it (10.42.200.0/24)
// stay.
func CheckRoutesPruned(t testing.TB, h *Host, nl *netlink.Handle) {
	t.Helper()
	routes := FeltRoutes(t, h)
	for _, gone := range []string{"10.42.9.0/24", "10.42.8.0/24"} {
		if _, ok := routes[netip.MustParsePrefix(gone)]; ok {
			t.Errorf("stale route %s not removed", gone)
		}
	}
	if _, ok := routes[netip.MustParsePrefix("10.99.0.0/24")]; !ok {
		t.Errorf("route outside the Pool was removed")
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

// NSHost is a testbed host as the udp backend (and the Manager's kernel
// events) need it: naming its namespace, where the backend opens its TUN
// device and socket.
type NSHost struct {
	FakeHost
	NS vnetns.NsHandle
}

// NetNS is the host's namespace.
func (h NSHost) NetNS() vnetns.NsHandle { return h.NS }
