package overlay_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/overlay"
)

// A kernel event concerning one network reconciles that network only: a
// route of felt's deleted by hand is repaired by a reconcile of the
// network whose pool holds it, and the other network is not synced; the
// events of a Detach (its VTEP and routes deleted) reconcile no other
// network. Before #14 each such event reconciled every network.
func TestKernelEventReconcilesItsNetworkOnly(t *testing.T) {
	t.Parallel()
	tb := newTestbed(t, "192.168.77.11", "192.168.77.12")
	a, b := tb.hosts[0], tb.hosts[1]
	vx, gw := &counting{Backend: a.b["vxlan"]}, &counting{Backend: a.b["host-gw"]}
	m, reg := newManagerReg(t, a, map[string]overlay.Backend{"vxlan": vx, "host-gw": gw}, time.Hour)
	nvx := a.network("vxlan", false)
	putLeases(t, reg, nvx, 0, a, b)
	// The host-gw network in a pool of its own, b holding 10.43.2.0/24.
	ngw := a.network("host-gw", false)
	ngw.ID, ngw.VNI = "net-gw", 0 // host-gw takes no VNI
	ngw.Pool, ngw.Subnet = netip.MustParsePrefix("10.43.0.0/16"), netip.MustParsePrefix("10.43.1.0/24")
	ah, bh := *a, *b
	ah.subnet, bh.subnet = ngw.Subnet, netip.MustParsePrefix("10.43.2.0/24")
	putLeases(t, reg, ngw, 0, &ah, &bh)
	ctx := context.Background()
	for _, n := range []overlay.Network{nvx, ngw} {
		if err := m.Attach(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = m.Detach(ctx, ngw) })
	run(t, m)
	has := func(p netip.Prefix) func() bool {
		return func() bool { _, ok := feltRoutes(t, a)[p]; return ok }
	}
	waitFor(t, "the vxlan route to b", has(b.subnet))
	waitFor(t, "the host-gw route to b", has(bh.subnet))
	waitQuiet(t, "vxlan after attaching", vx)
	waitQuiet(t, "host-gw after attaching", gw)

	// deleted deletes the route to p, waits for its repair and quiet, and
	// returns how many more Syncs the other backend made meanwhile.
	deleted := func(p netip.Prefix, own, other *counting) int64 {
		t.Helper()
		before := other.syncs.Load()
		r := feltRoutes(t, a)[p]
		if err := a.ns.NL.RouteDel(&r); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the route to "+p.String()+" repaired", has(p))
		waitQuiet(t, "after the route to "+p.String()+" was repaired", own)
		return other.syncs.Load() - before
	}
	if n := deleted(bh.subnet, gw, vx); n != 0 {
		t.Errorf("a host-gw route deleted: the vxlan network synced %d times; want 0", n)
	}
	if n := deleted(b.subnet, vx, gw); n != 0 {
		t.Errorf("a vxlan route deleted: the host-gw network synced %d times; want 0", n)
	}

	// A route of felt's to the whole pool (udp's and wireguard's devices
	// hold one, wireguard a blackhole too) is no peer's, but its deletion
	// is repaired all the same: it reconciles its network.
	pool := &netlink.Route{Dst: ipnet(nvx.Pool.String()), Type: unix.RTN_BLACKHOLE, Protocol: overlay.RouteProtocol, Priority: 4000}
	if err := a.ns.NL.RouteAdd(pool); err != nil {
		t.Fatal(err)
	}
	waitQuiet(t, "after adding a pool route", vx)
	syncs := vx.syncs.Load()
	if err := a.ns.NL.RouteDel(pool); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the vxlan network reconciled after its pool route was deleted", func() bool { return vx.syncs.Load() > syncs })

	before := gw.syncs.Load()
	if err := m.Detach(ctx, nvx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the vxlan route gone", func() bool { return !has(b.subnet)() })
	if n := waitQuiet(t, "after the Detach", gw) - before; n != 0 {
		t.Errorf("the vxlan network's Detach synced the host-gw network %d times; want 0\n%s", n, a.logs)
	}
	if !has(bh.subnet)() {
		t.Error("the host-gw route went with the vxlan network's Detach")
	}
}
