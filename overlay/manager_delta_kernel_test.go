package overlay_test

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/vxlan"
	tbed "github.com/felt-net/felt/testkit/testbed"
)

// deltaCounting counts a backend's full Syncs and its SyncPeers calls (it
// takes deltas when the backend does: counting hides SyncPeers).
type deltaCounting struct {
	counting
	deltas atomic.Int64
}

func (c *deltaCounting) SyncPeers(ctx context.Context, n overlay.Network, changed []lease.Lease, removed []netip.Prefix) error {
	c.deltas.Add(1)
	return c.Backend.(overlay.DeltaSyncer).SyncPeers(ctx, n, changed, removed)
}

// The Manager on a real VTEP and store: a peer arriving and one leaving
// are synced as deltas, with no full Sync, also after the kernel events of
// the route the delta deleted; a peer's route deleted by hand is repaired
// by a full Sync; a stray route survives the deltas and goes with the
// next full pass (Kick).
func TestDeltaSyncOnTheKernel(t *testing.T) {
	t.Parallel()
	tb := newTestbed(t, "192.168.77.21", "192.168.77.22", "192.168.77.23")
	a, b, c := tb.hosts[0], tb.hosts[1], tb.hosts[2]
	vx := &deltaCounting{counting: counting{Backend: a.b["vxlan"]}}
	m, reg := newManagerReg(t, a, map[string]overlay.Backend{"vxlan": vx, "host-gw": a.b["host-gw"]}, time.Hour)
	n := a.network("vxlan", false)
	putLeases(t, reg, n, 0, a, b)
	ctx := context.Background()
	if err := m.Attach(ctx, n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Detach(ctx, n) })
	run(t, m)
	has := func(p netip.Prefix) func() bool {
		return func() bool { _, ok := feltRoutes(t, a)[p]; return ok }
	}
	waitFor(t, "the route to b", has(b.subnet))
	full := waitQuiet(t, "after attaching", &vx.counting)

	// A stray route: the deltas leave it, the next full pass removes it.
	vtep := a.ns.Link(t, vxlan.VTEPName(vni)).Attrs().Index
	stray := netlink.Route{Dst: ipnet("10.42.9.0/24"), Gw: net.ParseIP("10.42.9.0"), LinkIndex: vtep,
		Flags: int(netlink.FLAG_ONLINK), Protocol: overlay.RouteProtocol}
	if err := a.ns.NL.RouteAdd(&stray); err != nil {
		t.Fatal(err)
	}
	strayDst := netip.MustParsePrefix("10.42.9.0/24")

	putLeases(t, reg, n, 0, c)
	waitFor(t, "the route to c", has(c.subnet))
	if err := reg.Release(ctx, n.Pool, b.subnet, b.id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the route to b gone", func() bool { return !has(b.subnet)() })
	if got := waitQuiet(t, "after the changes", &vx.counting); got != full {
		t.Errorf("a peer added and one removed made %d full Syncs, want 0 (deltas: %d)\n%s", got-full, vx.deltas.Load(), a.logs)
	}
	if d := vx.deltas.Load(); d < 2 {
		t.Errorf("%d SyncPeers calls, want one per change", d)
	}
	if _, ok := neighbours(t, a)[b.subnet.Addr()]; ok {
		t.Error("the removed peer's neighbour entry remains")
	}
	if _, ok := fdb(t, a)[b.MAC()]; ok {
		t.Error("the removed peer's FDB entry remains")
	}
	if !has(strayDst)() {
		t.Error("a delta removed the stray route")
	}
	m.Kick()
	waitFor(t, "the stray route removed by the full pass", func() bool { return !has(strayDst)() })
	full = waitQuiet(t, "after Kick", &vx.counting)

	// c's route deleted by hand: a kernel event, a full Sync repairs it.
	r := feltRoutes(t, a)[c.subnet]
	if err := a.ns.NL.RouteDel(&r); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the route to c repaired", has(c.subnet))
	if got := waitQuiet(t, "after the repair", &vx.counting); got <= full {
		t.Errorf("the repair was no full Sync")
	}
	c.apply(t, c.network("vxlan", false), a) // c's side, for traffic back
	tbed.MustPing(t, a.Host, c.Host)
}
