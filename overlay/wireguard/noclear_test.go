package wireguard_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay/wireguard"
	"github.com/felt-net/felt/testkit/testbed"
)

// Traffic to the pool never leaves in clear: before the first Sync, and
// after a peer's lease is gone (expired: its host died), a destination in
// the pool outside this host's subnet is routed into the WireGuard device
// (which drops what it has no peer for), not by another route (such as
// the default one) onto the underlay.
func TestPoolNeverInClear(t *testing.T) {
	tb, b, n := newBed(t, t.TempDir())
	a, c := tb.Hosts[0], tb.Hosts[1]
	ctx := context.Background()
	// The testbed's hosts have a default route onto the underlay, as a
	// host on the internet has.
	via := func(what string) {
		t.Helper()
		rs, err := a.NS.NL.RouteGet(net.ParseIP("10.42.2.7"))
		if err != nil || len(rs) == 0 || rs[0].LinkIndex != ifindex(t, a) {
			t.Fatalf("%s: 10.42.2.7 routed %+v (%v), want into %s", what, rs, err, dev)
		}
	}
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	via("before the first sync")
	own, _ := b.PublicKey()
	peer := startPeer(t, c, 51820, own, a.Pub, a.Subnet)
	if err := b.Sync(ctx, n, []lease.Lease{leaseOf(c, peer.key.PublicKey().String())}); err != nil {
		t.Fatal(err)
	}
	via("with the peer")
	if err := b.Sync(ctx, n, nil); err != nil {
		t.Fatal(err)
	}
	via("after the peer's lease is gone")
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	via("after setup again")
	// The device deleted (by hand, or its wireguard-go died): until the
	// next reconcile recreates it, the pool is dropped, not sent in clear.
	if err := a.NS.NL.LinkDel(a.NS.Link(t, dev)); err != nil {
		t.Fatal(err)
	}
	if rs, err := a.NS.NL.RouteGet(net.ParseIP("10.42.2.7")); err == nil {
		t.Fatalf("10.42.2.7 routed %+v with the device gone: it would leave in clear", rs)
	}
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	via("after the device was recreated")
}

// A network whose device cannot be set up (here: the key file broke, as
// after a restart: a user-space device is gone with the old felt and its
// routes with it) still sends nothing to the pool in clear: the pool is
// blackholed until Setup works, and Teardown removes that route too.
func TestFailedSetupFailsClosed(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, wireguard.KeyFile), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb, b, n := newBed(t, dir)
	a := tb.Hosts[0]
	ctx := context.Background()
	if err := b.Setup(ctx, n); err == nil {
		t.Fatal("setup with a broken key file worked")
	}
	if rs, err := a.NS.NL.RouteGet(net.ParseIP("10.42.2.7")); err == nil {
		t.Fatalf("10.42.2.7 routed %+v with no WireGuard device: it would leave in clear", rs)
	}
	// Fixed, the device takes the pool over.
	key, _ := wgtypes.GeneratePrivateKey()
	if err := os.WriteFile(filepath.Join(dir, wireguard.KeyFile), []byte(key.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	if rs, err := a.NS.NL.RouteGet(net.ParseIP("10.42.2.7")); err != nil || len(rs) == 0 || rs[0].LinkIndex != ifindex(t, a) {
		t.Fatalf("after the fix: 10.42.2.7 routed %+v (%v), want into %s", rs, err, dev)
	}
	// A restart with the key file broken again: dropped again.
	b.Teardown(ctx, n)
	if err := os.WriteFile(filepath.Join(dir, wireguard.KeyFile), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	again := newFelt(a, dir)
	if err := again.Setup(ctx, n); err == nil {
		t.Fatal("setup with a broken key file worked")
	}
	if rs, err := a.NS.NL.RouteGet(net.ParseIP("10.42.2.7")); err == nil {
		t.Fatalf("10.42.2.7 routed %+v with no WireGuard device", rs)
	}
	if err := again.Teardown(ctx, n); err != nil {
		t.Fatal(err)
	}
	rs, err := a.NS.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: testbed.IPNet(testbed.Pool.String())}, netlink.RT_FILTER_DST)
	if err != nil || len(rs) != 0 {
		t.Fatalf("routes to the pool after teardown: %+v (%v)", rs, err)
	}
}
