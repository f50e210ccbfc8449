package wireguard_test

import (
	"context"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/testkit/testbed"
)

// poolRoutes lists h's routes whose destination is the pool itself, by
// type and protocol.
func poolRoutes(t *testing.T, h *testbed.Host) []netlink.Route {
	t.Helper()
	rs, err := h.NS.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: testbed.IPNet(testbed.Pool.String())}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// count is how many of rs are of type typ with protocol proto.
func count(rs []netlink.Route, typ int, proto netlink.RouteProtocol) int {
	n := 0
	for _, r := range rs {
		if r.Type == typ && r.Protocol == proto {
			n++
		}
	}
	return n
}

// The pool's blackhole carries felt's route protocol: Sync's pruning of
// felt's routes keeps it, Teardown removes it and leaves an
// administrator's static route to the pool (another metric) alone, and a
// blackhole of an older felt ("proto static") is taken over by Setup, or
// removed by a Teardown without Setup.
func TestBlackholeIsFelts(t *testing.T) {
	tb, b, n := newBed(t, t.TempDir())
	a, c := tb.Hosts[0], tb.Hosts[1]
	ctx := context.Background()
	admin := netlink.Route{Dst: testbed.IPNet(testbed.Pool.String()), Type: unix.RTN_UNREACHABLE, Protocol: unix.RTPROT_STATIC, Priority: 1000}
	if err := a.NS.NL.RouteAdd(&admin); err != nil {
		t.Fatal(err)
	}
	adminLeft := func(when string) {
		t.Helper()
		if got := count(poolRoutes(t, a), unix.RTN_UNREACHABLE, unix.RTPROT_STATIC); got != 1 {
			t.Fatalf("%s: the administrator's static route to the pool is gone: %+v", when, poolRoutes(t, a))
		}
	}
	felts := func() int { return count(poolRoutes(t, a), unix.RTN_BLACKHOLE, overlay.RouteProtocol) }
	legacy := netlink.Route{Dst: testbed.IPNet(testbed.Pool.String()), Type: unix.RTN_BLACKHOLE, Protocol: unix.RTPROT_STATIC, Priority: 0x7fffffff}

	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	if got := felts(); got != 1 {
		t.Fatalf("%d blackholes of felt's (proto %d) after setup: %+v", got, overlay.RouteProtocol, poolRoutes(t, a))
	}
	if err := b.Sync(ctx, n, []lease.Lease{leaseOf(c, newPublicKey(t))}); err != nil {
		t.Fatal(err)
	}
	if got := felts(); got != 1 {
		t.Fatalf("sync pruned felt's blackhole: %+v", poolRoutes(t, a))
	}
	if err := b.Teardown(ctx, n); err != nil {
		t.Fatal(err)
	}
	if rs := poolRoutes(t, a); len(rs) != 1 {
		t.Fatalf("routes to the pool after teardown: %+v, want only the administrator's", rs)
	}
	adminLeft("teardown")

	// An upgrade: the older felt's blackhole, taken over by Setup.
	if err := a.NS.NL.RouteAdd(&legacy); err != nil {
		t.Fatal(err)
	}
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	if rs := poolRoutes(t, a); felts() != 1 || count(rs, unix.RTN_BLACKHOLE, unix.RTPROT_STATIC) != 0 {
		t.Fatalf("after setup over an older felt's blackhole: %+v, want felt's only", rs)
	}
	if err := b.Teardown(ctx, n); err != nil {
		t.Fatal(err)
	}
	adminLeft("teardown after the upgrade")

	// An upgrade with the network gone meanwhile: Teardown alone.
	if err := a.NS.NL.RouteAdd(&legacy); err != nil {
		t.Fatal(err)
	}
	if err := newFelt(a, t.TempDir()).Teardown(ctx, n); err != nil {
		t.Fatal(err)
	}
	if rs := poolRoutes(t, a); len(rs) != 1 {
		t.Fatalf("routes to the pool after a teardown of an older felt's network: %+v, want only the administrator's", rs)
	}
	adminLeft("teardown of an older felt's network")
}

// newPublicKey is a fresh public key, as another host's lease has one.
func newPublicKey(t *testing.T) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}
