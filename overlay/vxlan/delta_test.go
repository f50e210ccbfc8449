package vxlan_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/vxlan"
	"github.com/felt-net/felt/testkit/testbed"
)

// SyncPeers touches the peers it is given only: a peer added gets its
// entries and traffic, a removed one loses every entry, a moved one's old
// FDB entry goes; entries of no peer (strays) stay until the next full
// Sync, which prunes them as ever. Without a full Sync to start from, or
// with the VTEP recreated since, it asks for a full Sync.
func TestVXLANSyncPeers(t *testing.T) {
	t.Parallel()
	tb := testbed.New(t, "192.168.77.1", "192.168.77.2", "192.168.78.3")
	a, b, c := tb.Hosts[0], tb.Hosts[1], tb.Hosts[2]
	b.Apply(t, b.Network("vxlan", false), a, c)
	c.Apply(t, c.Network("vxlan", false), a, b)
	n := a.Network("vxlan", false)
	ctx := context.Background()
	be := a.B["vxlan"].(overlay.DeltaSyncer)
	if err := a.B["vxlan"].Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := be.SyncPeers(ctx, n, testbed.Leases(b), nil); !errors.Is(err, overlay.ErrFullSyncNeeded) {
		t.Fatalf("SyncPeers before any Sync: %v, want ErrFullSyncNeeded", err)
	}
	a.Apply(t, n, b)
	hasTunnel(t, a, b)

	// A stray route and neighbour of no peer: a delta leaves them.
	nl := a.NS.NL
	vtep := a.NS.Link(t, vxlan.VTEPName(testbed.VNI)).Attrs().Index
	stray := netlink.Route{Dst: testbed.IPNet("10.42.9.0/24"), Gw: net.ParseIP("10.42.9.0"), LinkIndex: vtep,
		Flags: int(netlink.FLAG_ONLINK), Protocol: overlay.RouteProtocol}
	if err := nl.RouteAdd(&stray); err != nil {
		t.Fatal(err)
	}
	if err := nl.NeighSet(&netlink.Neigh{LinkIndex: vtep, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("10.42.9.0"), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 9, 9}}); err != nil {
		t.Fatal(err)
	}
	hasStray := func() bool {
		_, route := testbed.FeltRoutes(t, a)[netip.MustParsePrefix("10.42.9.0/24")]
		_, neigh := testbed.Neighbours(t, a)[netip.MustParseAddr("10.42.9.0")]
		return route && neigh
	}

	if err := be.SyncPeers(ctx, n, testbed.Leases(c), nil); err != nil {
		t.Fatalf("SyncPeers adding c: %v", err)
	}
	hasTunnel(t, a, c)
	hasTunnel(t, a, b)
	testbed.MustPing(t, a, c)
	if !hasStray() {
		t.Fatal("a delta removed a stray entry: it dumped and pruned")
	}

	// c moves to another public IP (with the same MAC): the FDB entry
	// follows; then back.
	moved := c.Lease()
	moved.PublicIP = netip.MustParseAddr("192.168.78.33")
	if err := be.SyncPeers(ctx, n, []lease.Lease{moved}, nil); err != nil {
		t.Fatalf("SyncPeers moving c: %v", err)
	}
	if dst := testbed.FDB(t, a)[c.MAC()]; dst != moved.PublicIP {
		t.Fatalf("fdb %s dst %s after the move, want %s", c.MAC(), dst, moved.PublicIP)
	}
	// c publishes another MAC: the old FDB entry goes, the neighbour follows.
	remac := c.Lease()
	remac.BackendData = []byte(`{"vtepMAC":"02:00:00:00:0c:0c"}`)
	if err := be.SyncPeers(ctx, n, []lease.Lease{remac}, nil); err != nil {
		t.Fatalf("SyncPeers changing c's MAC: %v", err)
	}
	if _, ok := testbed.FDB(t, a)[c.MAC()]; ok {
		t.Fatalf("fdb entry of c's old MAC %s remains", c.MAC())
	}
	if got := testbed.Neighbours(t, a)[c.Subnet.Addr()].HardwareAddr.String(); got != "02:00:00:00:0c:0c" {
		t.Fatalf("neighbour %s lladdr %s, want the new MAC", c.Subnet.Addr(), got)
	}
	if err := be.SyncPeers(ctx, n, testbed.Leases(c), nil); err != nil {
		t.Fatalf("SyncPeers restoring c: %v", err)
	}
	hasTunnel(t, a, c)
	testbed.MustPing(t, a, c)

	if err := be.SyncPeers(ctx, n, nil, []netip.Prefix{b.Subnet}); err != nil {
		t.Fatalf("SyncPeers removing b: %v", err)
	}
	hasNothing(t, a, b)
	hasTunnel(t, a, c)
	testbed.MustNotPing(t, a, b)
	if !hasStray() {
		t.Fatal("a delta removed a stray entry: it dumped and pruned")
	}

	// The full Sync still heals: the strays go.
	a.Apply(t, n, c)
	if hasStray() {
		t.Fatal("the full Sync left a stray entry")
	}
	hasTunnel(t, a, c)

	// A VTEP recreated since the last Sync has lost its entries: SyncPeers
	// asks for a full Sync.
	if err := nl.LinkDel(a.NS.Link(t, vxlan.VTEPName(testbed.VNI))); err != nil {
		t.Fatal(err)
	}
	if err := a.B["vxlan"].Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := be.SyncPeers(ctx, n, testbed.Leases(b), nil); !errors.Is(err, overlay.ErrFullSyncNeeded) {
		t.Fatalf("SyncPeers after the VTEP was recreated: %v, want ErrFullSyncNeeded", err)
	}
	// A SyncPeers that failed leaves no record: the next asks for a full
	// Sync too, until one succeeds.
	a.Apply(t, n, c)
	bad := b.Lease()
	bad.BackendData = []byte(`{"vtepMAC":"nonsense"}`)
	if err := be.SyncPeers(ctx, n, []lease.Lease{bad}, nil); err == nil || errors.Is(err, overlay.ErrFullSyncNeeded) {
		t.Fatalf("SyncPeers with a bad MAC: %v, want its error", err)
	}
	if err := be.SyncPeers(ctx, n, testbed.Leases(b), nil); !errors.Is(err, overlay.ErrFullSyncNeeded) {
		t.Fatalf("SyncPeers after a failed one: %v, want ErrFullSyncNeeded", err)
	}
}

// Two leases of one host (a restart that leased anew before the old lease
// expired) share one FDB entry: removing one subnet keeps it for the other.
func TestVXLANSyncPeersSharedFDB(t *testing.T) {
	t.Parallel()
	tb := testbed.New(t, "192.168.77.1", "192.168.77.2")
	a, b := tb.Hosts[0], tb.Hosts[1]
	n := a.Network("vxlan", false)
	second := b.Lease()
	second.Subnet = netip.MustParsePrefix("10.42.20.0/24")
	ctx := context.Background()
	if err := a.B["vxlan"].Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := a.B["vxlan"].Sync(ctx, n, []lease.Lease{b.Lease(), second}); err != nil {
		t.Fatal(err)
	}
	if err := a.B["vxlan"].(overlay.DeltaSyncer).SyncPeers(ctx, n, nil, []netip.Prefix{second.Subnet}); err != nil {
		t.Fatal(err)
	}
	hasTunnel(t, a, b)
	if _, ok := testbed.FeltRoutes(t, a)[second.Subnet]; ok {
		t.Fatalf("route to the removed %s remains", second.Subnet)
	}
}
