package wireguard_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay/wireguard"
	"github.com/felt-net/felt/testkit/testbed"
)

// A peer's endpoint WireGuard learned from its packets (here the peer
// sends from another port, as from behind a NAT) survives a Sync whose
// lease is unchanged: traffic to the peer keeps flowing to where it is.
// A lease whose endpoint changed is applied.
func TestSyncKeepsRoamedEndpoint(t *testing.T) {
	tb, b, n := newBed(t, t.TempDir())
	a, c := tb.Hosts[0], tb.Hosts[1]
	ctx := context.Background()
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	own, _ := b.PublicKey()
	peer := startPeer(t, c, wireguard.DefaultPort, own, a.Pub, a.Subnet)
	l := leaseOf(c, peer.key.PublicKey().String())
	if err := b.Sync(ctx, n, []lease.Lease{l}); err != nil {
		t.Fatal(err)
	}
	testbed.MustPing(t, a, c)
	endpoint := func() string {
		t.Helper()
		st := status(t, b, n)
		if len(st.Peers) != 1 {
			t.Fatalf("peers %+v", st.Peers)
		}
		return st.Peers[0].Endpoint
	}

	// The peer moves to another port: its next packets tell felt's device.
	if err := peer.dev.IpcSet("listen_port=51821\n"); err != nil {
		t.Fatal(err)
	}
	testbed.MustPing(t, c, a)
	if got := endpoint(); got != "192.168.77.2:51821" {
		t.Fatalf("endpoint %s after the peer roamed, want 192.168.77.2:51821 (learned)", got)
	}
	for range 2 {
		if err := b.Setup(ctx, n); err != nil {
			t.Fatal(err)
		}
		if err := b.Sync(ctx, n, []lease.Lease{l}); err != nil {
			t.Fatal(err)
		}
	}
	if got := endpoint(); got != "192.168.77.2:51821" {
		t.Fatalf("endpoint %s after a sync with an unchanged lease, want the learned 192.168.77.2:51821", got)
	}
	testbed.MustPing(t, a, c) // a sends first: to where the peer is

	// The lease moves to another public IP (the peer back on the network's
	// port): felt sets it.
	if err := peer.dev.IpcSet("listen_port=51820\n"); err != nil {
		t.Fatal(err)
	}
	c.NS.AddAddr(t, testbed.UnderlayIface, "192.168.77.22/24")
	l.PublicIP = netip.MustParseAddr("192.168.77.22")
	if err := b.Sync(ctx, n, []lease.Lease{l}); err != nil {
		t.Fatal(err)
	}
	if got := endpoint(); got != "192.168.77.22:51820" {
		t.Fatalf("endpoint %s after the lease changed, want the lease's 192.168.77.22:51820", got)
	}
	testbed.MustPing(t, a, c)
}
