package wireguard

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The key is made on first use, 0600, in wg(8)'s format, and the same key
// is read back afterwards (peers know the host by it).
func TestKeyFileCreatedAndReused(t *testing.T) {
	path := filepath.Join(t.TempDir(), KeyFile)
	k1, err := loadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if parsed, err := wgtypes.ParseKey(strings.TrimSpace(string(data))); err != nil || parsed != k1 {
		t.Fatalf("key file holds %q (%v), want the key in base64", data, err)
	}
	k2, err := loadKey(path)
	if err != nil || k2 != k1 {
		t.Fatalf("second load: %v (same key %v)", err, k2 == k1)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), KeyFile+".tmp*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// A key file others can read, or one holding no key, is an error naming
// the file, and is left alone: replacing it would change the host's
// identity behind the user's back.
func TestKeyFileRefused(t *testing.T) {
	key, _ := wgtypes.GeneratePrivateKey()
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"world-readable", key.String() + "\n", 0o644, "mode 0644 lets others read it"},
		{"group-readable", key.String(), 0o640, "mode 0640"},
		{"corrupt", "not a key\n", 0o600, "not a base64 WireGuard key"},
		{"short", "AAAA\n", 0o600, "not a base64 WireGuard key"},
		{"empty", "", 0o600, "not a base64 WireGuard key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), KeyFile)
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			_, err := loadKey(path)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s saying %q", err, path, tc.want)
			}
			if strings.Contains(err.Error(), key.String()) {
				t.Fatalf("the error shows the key: %v", err)
			}
			if data, _ := os.ReadFile(path); string(data) != tc.content {
				t.Fatalf("the file was changed to %q", data)
			}
		})
	}
}

// A 0400 key file (read-only, owner only) is fine.
func TestKeyFileReadOnlyAccepted(t *testing.T) {
	key, _ := wgtypes.GeneratePrivateKey()
	path := filepath.Join(t.TempDir(), KeyFile)
	if err := os.WriteFile(path, []byte(key.String()+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if got, err := loadKey(path); err != nil || got != key {
		t.Fatalf("got %v, %v", got, err)
	}
}
