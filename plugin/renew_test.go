package plugin

import (
	"os"
	"path/filepath"
	"testing"

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
