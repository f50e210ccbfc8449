package plugin

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/wireguard"
)

// The renewal loop's view of this host's WireGuard public key follows the
// key file: a replaced file (rotation) shows at the next look, which
// renews the leases at once so that peers learn the new key. Without the
// wireguard backend it is "".
func TestWireGuardKeyFollowsTheKeyFile(t *testing.T) {
	if got := (&App{}).wireGuardKey(); got != "" {
		t.Fatalf("no backends: %q", got)
	}
	dir := t.TempDir()
	a := &App{backends: overlay.NewBackends(wireguard.New(overlay.BackendConfig{HostID: "h", StateDir: dir}))}
	first := a.wireGuardKey()
	if _, err := wgtypes.ParseKey(first); err != nil {
		t.Fatalf("key %q: %v", first, err)
	}
	if again := a.wireGuardKey(); again != first {
		t.Fatalf("key %s, then %s with the file unchanged", first, again)
	}
	next, _ := wgtypes.GeneratePrivateKey()
	tmp := filepath.Join(dir, "new")
	if err := os.WriteFile(tmp, []byte(next.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, wireguard.KeyFile)); err != nil {
		t.Fatal(err)
	}
	if got := a.wireGuardKey(); got != next.PublicKey().String() {
		t.Fatalf("key %s after the key file was replaced, want %s", got, next.PublicKey())
	}
}

// A change of this host's public IP or WireGuard key is announced (logged,
// the overlay kicked) once, when first seen, while the renewals that
// should publish it fail: each check renews again, and says nothing new.
// The first values seen, and a value that could not be read, are no
// change; a change across one that could not be read is.
func TestRenewAnnouncesEachChangeOnce(t *testing.T) {
	ip1, ip2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	var st renewState
	check := func(step string, now published, ipMoved, keyMoved, renew bool) {
		t.Helper()
		i, k, r := st.look(now)
		if i != ipMoved || k != keyMoved || r != renew {
			t.Fatalf("%s: IP moved %v, key moved %v, renew %v; want %v, %v, %v", step, i, k, r, ipMoved, keyMoved, renew)
		}
	}
	check("start", published{ip1, "k1"}, false, false, true)
	st.leased = published{ip1, "k1"} // renewed
	check("nothing new", published{ip1, "k1"}, false, false, false)
	check("key rotated", published{ip1, "k2"}, false, true, true)
	check("renewal failed, key still new", published{ip1, "k2"}, false, false, true)
	check("renewal failed again", published{ip1, "k2"}, false, false, true)
	check("IP changed too", published{ip2, "k2"}, true, false, true)
	check("renewal failed, both still new", published{ip2, "k2"}, false, false, true)
	st.leased = published{ip2, "k2"}
	check("renewed", published{ip2, "k2"}, false, false, false)
	check("address unreadable", published{netip.Addr{}, "k2"}, false, false, true)
	check("back at another address", published{ip1, "k2"}, true, false, true)
	check("key unusable", published{ip1, ""}, false, false, true)
	check("key back", published{ip1, "k2"}, false, false, true)
}

// A key rotation noticed by any reader of the key file (a reconcile's
// Setup, LeaseData) wakes the renewal loop, which then publishes the new
// key at once, not at its next check.
func TestKeyChangeWakesRenewal(t *testing.T) {
	if ch := (&App{}).wireGuardKeyChanged(); ch != nil {
		t.Fatal("a key change channel without the wireguard backend")
	}
	dir := t.TempDir()
	wg := wireguard.New(overlay.BackendConfig{HostID: "h", StateDir: dir})
	a := &App{backends: overlay.NewBackends(wg)}
	ch := a.wireGuardKeyChanged()
	first := a.wireGuardKey()
	_ = wg.LeaseData(netip.MustParsePrefix("10.42.0.0/16")) // the file unchanged
	select {
	case <-ch:
		t.Fatal("woken with the key file unchanged")
	default:
	}
	next, _ := wgtypes.GeneratePrivateKey()
	tmp := filepath.Join(dir, "new")
	if err := os.WriteFile(tmp, []byte(next.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, wireguard.KeyFile)); err != nil {
		t.Fatal(err)
	}
	_ = wg.LeaseData(netip.MustParsePrefix("10.42.0.0/16")) // not the loop's read: a reconcile's, say
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("the key changed, the renewal was not woken")
	}
	if got := a.wireGuardKey(); got == first || got != next.PublicKey().String() {
		t.Fatalf("key %s after the rotation (was %s), want %s", got, first, next.PublicKey())
	}
	select {
	case <-a.wireGuardKeyChanged():
		t.Fatal("the next change's channel is closed already")
	default:
	}
}
