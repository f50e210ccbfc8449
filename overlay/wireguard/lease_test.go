package wireguard

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
)

var pool = netip.MustParsePrefix("10.42.0.0/16")

// Every pool's lease carries this host's public key under wgPublicKey, the
// key the state directory holds; never the private key.
func TestLeaseDataIsThePublicKey(t *testing.T) {
	dir := t.TempDir()
	b := New(overlay.BackendConfig{HostID: "h", StateDir: dir})
	data, err := json.Marshal(b.LeaseData(pool))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := loadKey(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"wgPublicKey":"` + priv.PublicKey().String() + `"}`; string(data) != want {
		t.Fatalf("lease data %s, want %s", data, want)
	}
	if strings.Contains(string(data), priv.String()) {
		t.Fatal("the private key is in the lease")
	}
	other, _ := json.Marshal(b.LeaseData(netip.MustParsePrefix("10.99.0.0/16")))
	if string(other) != string(data) {
		t.Fatalf("another pool's lease data %s, want the same key %s", other, data)
	}
	if got := LeasePublicKey(lease.Lease{BackendData: data}); got != priv.PublicKey().String() {
		t.Fatalf("LeasePublicKey %q", got)
	}
	// A second felt on the same state directory (a restart) publishes the
	// same key.
	again, _ := json.Marshal(New(overlay.BackendConfig{HostID: "h", StateDir: dir}).LeaseData(pool))
	if string(again) != string(data) {
		t.Fatalf("after a restart %s, want %s", again, data)
	}
}

// Without a state directory (tests) the key lives in memory: one per
// backend, stable.
func TestKeyInMemoryWithoutStateDir(t *testing.T) {
	b := New(overlay.BackendConfig{HostID: "h"})
	k1, err1 := b.PublicKey()
	k2, err2 := b.PublicKey()
	if err1 != nil || err2 != nil || k1 != k2 || k1 == (wgtypes.Key{}) {
		t.Fatalf("%v %v %v %v", k1, k2, err1, err2)
	}
	k3, _ := New(overlay.BackendConfig{HostID: "h"}).PublicKey()
	if k3 == k1 {
		t.Fatal("two backends share an in-memory key")
	}
}

// A broken key file fails only wireguard: its lease data is empty (the
// other backends' data still goes out) and Setup names the file; once the
// file is fixed, the key is read without a restart.
func TestBrokenKeyFileFailsOnlyWireGuard(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFile)
	if err := os.WriteFile(path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Setup touches the kernel (the pool's blackhole) before it fails: in a
	// namespace of the test's, never the machine's.
	ns := netns.New(t, "wgkey")
	b := New(overlay.BackendConfig{HostID: "h", StateDir: dir, Netlink: ns.NL})
	if d := b.LeaseData(pool); d != nil {
		t.Fatalf("lease data %v with a broken key file", d)
	}
	reg := overlay.NewBackends(b)
	if data, err := reg.LeaseData(pool); err != nil || data != nil {
		t.Fatalf("registry lease data %s, %v", data, err)
	}
	n := overlay.Network{ID: "n", Pool: pool, Subnet: netip.MustParsePrefix("10.42.1.0/24"), MTU: 1420}
	err := b.Setup(t.Context(), n)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("setup: %v, want an error naming %s", err, path)
	}
	key, _ := wgtypes.GeneratePrivateKey()
	if err := os.WriteFile(path, []byte(key.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := b.PublicKey(); err != nil || got != key.PublicKey() {
		t.Fatalf("after the fix: %v, %v", got, err)
	}
}

// A key file replaced while felt runs (rotation) is read at the next
// call: the lease data publishes the new public key. A replacement that
// cannot be used (half written, garbage) keeps the key in use, reported
// once; fixed, it is read. Removed, a new key is made, as at a start.
func TestKeyFileReplacedIsReread(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFile)
	logs := &testkit.LogBuffer{}
	b := New(overlay.BackendConfig{HostID: "h", StateDir: dir, Log: slog.New(slog.NewTextHandler(logs, nil))})
	k1, err := b.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	published := func() string {
		t.Helper()
		data, err := json.Marshal(b.LeaseData(pool))
		if err != nil {
			t.Fatal(err)
		}
		return LeasePublicKey(lease.Lease{BackendData: data})
	}
	replace := func(content string) {
		t.Helper()
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	k2, _ := wgtypes.GeneratePrivateKey()
	replace(k2.String() + "\n")
	if got := published(); got != k2.PublicKey().String() {
		t.Fatalf("lease publishes %s after the key file was replaced, want the new %s (was %s)", got, k2.PublicKey(), k1)
	}
	if !strings.Contains(logs.String(), "key file replaced") {
		t.Errorf("the rotation is not logged:\n%s", logs)
	}

	// Rewritten in place, half way (truncated): the key in use stays.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, err := b.PublicKey(); err != nil || got != k2.PublicKey() {
			t.Fatalf("with the key file empty: %v, %v, want the key in use %s", got, err, k2.PublicKey())
		}
	}
	if n := strings.Count(logs.String(), "cannot be used"); n != 1 {
		t.Errorf("an unusable key file reported %d times, want once:\n%s", n, logs)
	}
	k3, _ := wgtypes.GeneratePrivateKey()
	if err := os.WriteFile(path, []byte(k3.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := published(); got != k3.PublicKey().String() {
		t.Fatalf("lease publishes %s after the key file was written in place, want %s", got, k3.PublicKey())
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	k4, err := b.PublicKey()
	if err != nil || k4 == k3.PublicKey() {
		t.Fatalf("after the key file was removed: %v, %v, want a new key", k4, err)
	}
	if again, _ := loadKey(path); again.PublicKey() != k4 {
		t.Fatalf("the new key is not the file's")
	}
}
