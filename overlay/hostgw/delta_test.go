package hostgw_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/testkit/testbed"
)

// SyncPeers routes the peers it is given and removes the routes of the
// subnets removed, and touches nothing else: a stray route stays until the
// next full Sync prunes it. Without a full Sync to start from, it asks for
// one.
func TestHostGWSyncPeers(t *testing.T) {
	t.Parallel()
	tb := testbed.New(t, "192.168.77.1", "192.168.77.2", "192.168.77.3")
	a, b, c := tb.Hosts[0], tb.Hosts[1], tb.Hosts[2]
	b.Apply(t, b.Network("host-gw", false), a, c)
	c.Apply(t, c.Network("host-gw", false), a, b)
	n := a.Network("host-gw", false)
	ctx := context.Background()
	be := a.B["host-gw"].(overlay.DeltaSyncer)
	if err := be.SyncPeers(ctx, n, testbed.Leases(b), nil); !errors.Is(err, overlay.ErrFullSyncNeeded) {
		t.Fatalf("SyncPeers before any Sync: %v, want ErrFullSyncNeeded", err)
	}
	a.Apply(t, n, b)
	eth := a.NS.Link(t, testbed.UnderlayIface).Attrs().Index
	stray := netlink.Route{Dst: testbed.IPNet("10.42.9.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: overlay.RouteProtocol}
	if err := a.NS.NL.RouteAdd(&stray); err != nil {
		t.Fatal(err)
	}
	has := func(p netip.Prefix) bool { _, ok := testbed.FeltRoutes(t, a)[p]; return ok }
	strayDst := netip.MustParsePrefix("10.42.9.0/24")

	if err := be.SyncPeers(ctx, n, testbed.Leases(c), nil); err != nil {
		t.Fatal(err)
	}
	testbed.MustPing(t, a, c)
	testbed.MustPing(t, a, b)
	if err := be.SyncPeers(ctx, n, nil, []netip.Prefix{b.Subnet}); err != nil {
		t.Fatal(err)
	}
	if has(b.Subnet) {
		t.Fatal("the removed peer's route remains")
	}
	testbed.MustNotPing(t, a, b)
	if !has(strayDst) {
		t.Fatal("a delta removed a stray route: it dumped and pruned")
	}
	// An unreachable peer's delta fails, and its old route goes.
	moved := c.Lease()
	moved.PublicIP = netip.MustParseAddr("192.168.78.3")
	if err := be.SyncPeers(ctx, n, []lease.Lease{moved}, nil); err == nil {
		t.Fatal("SyncPeers with an unreachable peer succeeded")
	}
	if has(c.Subnet) {
		t.Fatal("an unreachable peer keeps its old route")
	}
	a.Apply(t, n, c)
	if has(strayDst) {
		t.Fatal("the full Sync left the stray route")
	}
	testbed.MustPing(t, a, c)
}
