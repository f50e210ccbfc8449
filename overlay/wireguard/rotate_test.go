package wireguard_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay/wireguard"
	"github.com/felt-net/felt/testkit/testbed"
)

// A key file replaced while felt runs (rotation) reaches the device at the
// next Setup (every reconcile runs one), without recreating it: once the
// peer has the new public key (from this host's renewed lease), traffic
// flows again.
func TestKeyRotationWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	tb, b, n := newBed(t, dir)
	a, c := tb.Hosts[0], tb.Hosts[1]
	ctx := context.Background()
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	old, _ := b.PublicKey()
	peer := startPeer(t, c, wireguard.DefaultPort, old, a.Pub, a.Subnet)
	leases := []lease.Lease{leaseOf(c, peer.key.PublicKey().String())}
	if err := b.Sync(ctx, n, leases); err != nil {
		t.Fatal(err)
	}
	testbed.MustPing(t, a, c)
	before := ifindex(t, a)

	next, _ := wgtypes.GeneratePrivateKey()
	tmp := filepath.Join(dir, "new.key")
	if err := os.WriteFile(tmp, []byte(next.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, wireguard.KeyFile)); err != nil {
		t.Fatal(err)
	}
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, n, leases); err != nil {
		t.Fatal(err)
	}
	if st := status(t, b, n); st.PublicKey != next.PublicKey().String() {
		t.Fatalf("device key %s after the rotation, want %s", st.PublicKey, next.PublicKey())
	}
	if got, _ := b.PublicKey(); got != next.PublicKey() {
		t.Fatalf("published key %s, want %s", got, next.PublicKey())
	}
	if ifindex(t, a) != before {
		t.Fatal("the rotation recreated the device")
	}
	// The peer takes the new key from the lease, as its felt would.
	nk := next.PublicKey()
	if err := peer.dev.IpcSet(fmt.Sprintf("public_key=%s\nremove=true\npublic_key=%s\nendpoint=%s:%d\nallowed_ip=%s\n",
		hex.EncodeToString(old[:]), hex.EncodeToString(nk[:]), a.Pub, wireguard.DefaultPort, a.Subnet)); err != nil {
		t.Fatal(err)
	}
	testbed.MustPing(t, a, c)
	testbed.MustPing(t, c, a)
}
