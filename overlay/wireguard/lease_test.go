package wireguard

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
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
	b := New(overlay.BackendConfig{HostID: "h", StateDir: dir})
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
