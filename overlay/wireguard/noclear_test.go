package wireguard_test

import (
	"context"
	"net"
	"testing"

	"github.com/felt-net/felt/lease"
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
}
