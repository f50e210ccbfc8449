package wireguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// KeyFile is the name of this host's private key in the state directory.
const KeyFile = "wireguard.key"

// loadKey returns the private key in path, creating it (a new key) when
// the file does not exist. The file holds the key in base64, as wg(8)
// writes it, readable by its owner only: a file others can read, or one
// that does not hold a key, is an error naming it, and is left as it is
// (replacing it would silently change the host's identity for its peers).
//
// Only a regular file is read, checked before opening it: a FIFO there
// would block felt's start forever, and a symlink could point felt at a
// key it does not own.
func loadKey(path string) (wgtypes.Key, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(path)
	}
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard private key %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return wgtypes.Key{}, fmt.Errorf("wireguard private key %s: not a regular file (%s): remove it to make a new key", path, fi.Mode().Type())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard private key %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return wgtypes.Key{}, fmt.Errorf("wireguard private key %s: mode %04o lets others read it: chmod 600 %s", path, perm, path)
	}
	key, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard private key %s: not a base64 WireGuard key (%v): fix it, or remove it to make a new key (peers pick the new one up with this host's lease)", path, err)
	}
	return key, nil
}

// createKey writes a new private key to path atomically: a temporary file
// made with mode 0600, then renamed, so no one ever reads a partial key or
// one with a wider mode, and a crash leaves no half-written file.
func createKey(path string) (wgtypes.Key, error) {
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard private key: generate: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, KeyFile+".tmp*") // mode 0600
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard private key %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.WriteString(key.String() + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return wgtypes.Key{}, fmt.Errorf("wireguard private key %s: write: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return wgtypes.Key{}, fmt.Errorf("wireguard private key %s: %w", path, err)
	}
	return key, nil
}

// fileID tells a file's versions apart: a file replaced (renamed over) has
// another inode, one rewritten in place another size or mtime. The zero
// fileID is a file that cannot be looked at (none).
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func statKey(path string) fileID {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileID{}
	}
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id
}
