// Package wireguard is the "wireguard" backend: the udp backend's layout
// (per network a device holding this host's subnet's .0/32, a route per
// peer subnet through it) with WireGuard as the device, so every packet
// between hosts is encrypted and authenticated with the peer's key.
//
// The device is the kernel's WireGuard where the module exists, else
// wireguard-go in user space on a TUN with offloads (impl.go); both are
// configured through wgctrl only (peers.go), so the path the tests cover
// is the one kernel users run. Each host has one key pair (keys.go); its
// public key goes into the host's leases (LeaseData), and each peer's
// lease becomes a WireGuard peer with the lease's subnet as its allowed
// IPs (sync.go).
package wireguard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// Name selects the backend: -o backend=wireguard.
const Name = "wireguard"

// DefaultPort is the UDP port of a network created without -o port
// (WireGuard's customary one).
const DefaultPort = 51820

// The modes of BackendConfig.WireGuard (FELT_WIREGUARD).
const (
	ModeAuto      = "auto"      // the kernel's where it works, else user space
	ModeKernel    = "kernel"    // the kernel's or fail
	ModeUserspace = "userspace" // wireguard-go always
)

// The implementations Status reports.
const (
	ImplKernel    = "kernel"
	ImplUserspace = "userspace"
)

// Backend is the wireguard backend of one host.
type Backend struct {
	cfg     overlay.BackendConfig
	mode    string
	ns      netns.NsHandle // the host's namespace; closed: felt's own
	keyPath string         // "" keeps the key in memory

	// addKernelLink creates a kernel WireGuard device; tests replace it
	// to play a kernel without the module.
	addKernelLink func(name string, mtu int) error

	keyMu sync.Mutex
	key   *wgtypes.Key // loaded (or made) once it could be
	// keyFile is the key file as it was when key was read from it; a
	// file that differs is read again (rotation). keyBad is one that
	// could not be used, reported once, key staying in use meanwhile.
	keyFile fileID
	keyBad  *fileID
	// keyChanged is closed when the key in use changes (KeyChanged); nil
	// until someone asks.
	keyChanged chan struct{}

	mu   sync.Mutex
	nets map[string]*wgNet // by network ID
}

// wgNet is what the backend keeps for one network between calls.
type wgNet struct {
	n       overlay.Network // as last set up (port and MTU defaulted)
	impl    string          // ImplKernel or ImplUserspace; "" without a device
	shown   string          // the implementation last logged
	user    *userDevice     // the running wireguard-go device, for ImplUserspace
	ifindex int             // of the device when it was created or adopted
	// peers and routes are what the last Sync programmed, put back into a
	// recreated device so that traffic flows before the next Sync.
	peers  []wgtypes.PeerConfig
	routes []netip.Prefix
	// endpoints are the peers' endpoints as felt last set them (their
	// leases'), by key: a Sync sets a peer's endpoint again only when its
	// lease's changed, leaving one WireGuard learned (roaming) alone.
	endpoints map[wgtypes.Key]netip.AddrPort
	// skipped are the leases Sync skipped, by host and cause, so that
	// each is logged once (while it lasts).
	skipped map[string]bool
}

// New returns the backend for the host cfg describes. A Host implementing
// overlay.NetNSHost has its devices and sockets made in its namespace.
func New(cfg overlay.BackendConfig) *Backend {
	cfg = cfg.WithDefaults()
	b := &Backend{cfg: cfg, mode: cfg.WireGuard, ns: netns.None(), nets: map[string]*wgNet{}}
	if b.mode == "" {
		b.mode = ModeAuto
	}
	if h, ok := cfg.Host.(overlay.NetNSHost); ok {
		b.ns = h.NetNS()
	}
	if cfg.StateDir != "" {
		b.keyPath = filepath.Join(cfg.StateDir, KeyFile)
	}
	b.addKernelLink = b.netlinkAddWireguard
	if b.keyPath != "" {
		// The key pair is made at the first start, and a key file that is
		// unusable is reported then, not at the first wireguard network.
		if _, err := b.privateKey(); err != nil {
			b.cfg.Log.Error("wireguard networks cannot work until the key file is fixed", "err", err)
		}
	}
	return b
}

func (*Backend) Name() string { return Name }

// Overhead is outer IPv6 40 (the worst case WireGuard allows for) + UDP 8
// + WireGuard's header 16 and tag 16: what wg-quick assumes too.
func (*Backend) Overhead() int { return 80 }

// Options: a port, DefaultPort when not given.
func (*Backend) Options() overlay.Options { return overlay.Options{DefaultPort: DefaultPort} }

// leaseData is what wireguard publishes in a lease: this host's public
// key. The endpoint is the lease's public IP and the network's port; the
// allowed IPs are the lease's subnet.
type leaseData struct {
	PublicKey string `json:"wgPublicKey"`
}

// LeaseData publishes this host's public key, for every pool: the lease
// is taken before the network's backend is known. With no usable key (a
// bad key file) it publishes nothing; Setup then says why.
func (b *Backend) LeaseData(netip.Prefix) any {
	key, err := b.privateKey()
	if err != nil {
		b.cfg.Log.Debug("wireguard: no public key for the lease", "err", err)
		return nil
	}
	return leaseData{PublicKey: key.PublicKey().String()}
}

// LeasePublicKey is the public key l publishes, as written; "" for none.
func LeasePublicKey(l lease.Lease) string {
	var d leaseData
	_ = json.Unmarshal(l.BackendData, &d) // no or other data: no key
	return d.PublicKey
}

// PublicKey is this host's public key, as its leases publish it.
func (b *Backend) PublicKey() (wgtypes.Key, error) {
	key, err := b.privateKey()
	if err != nil {
		return wgtypes.Key{}, err
	}
	return key.PublicKey(), nil
}

// privateKey loads this host's key (keys.go), or makes one in memory
// without a state directory. A failure is not kept: a fixed key file is
// read at the next call.
//
// The key file is read again whenever it changed (its inode, size or
// mtime: replaced, as a key rotation does): every Setup and Sync and
// every lease renewal asks, so Setup gives the device the new key and the
// renewal, woken (KeyChanged), publishes its public key, which peers then
// take from the lease. A changed file that cannot be used (half written,
// readable by others, garbage) is reported once and the loaded key stays
// in use.
func (b *Backend) privateKey() (wgtypes.Key, error) {
	b.keyMu.Lock()
	defer b.keyMu.Unlock()
	if b.keyPath == "" {
		if b.key == nil {
			key, err := wgtypes.GeneratePrivateKey()
			if err != nil {
				return wgtypes.Key{}, err
			}
			b.key = &key
		}
		return *b.key, nil
	}
	id := statKey(b.keyPath) // before reading: a change meanwhile is read at the next call
	if b.key != nil && (id == b.keyFile || b.keyBad != nil && id == *b.keyBad) {
		return *b.key, nil
	}
	key, err := loadKey(b.keyPath)
	switch {
	case err != nil && b.key == nil:
		return wgtypes.Key{}, err
	case err != nil:
		b.keyBad = &id
		b.cfg.Log.Error("wireguard: the key file changed but cannot be used: keeping the key loaded before", "publicKey", b.key.PublicKey().String(), "err", err)
		return *b.key, nil
	case b.key != nil && key != *b.key:
		b.cfg.Log.Info("wireguard: key file replaced: using its key; peers learn the new public key from this host's leases",
			"file", b.keyPath, "publicKey", key.PublicKey().String(), "was", b.key.PublicKey().String())
	}
	changed := b.key != nil && key != *b.key
	b.key, b.keyFile, b.keyBad = &key, id, nil
	if changed && b.keyChanged != nil {
		close(b.keyChanged)
		b.keyChanged = nil
	}
	return key, nil
}

// KeyChanged returns a channel closed when the key in use next changes:
// the key file replaced and read again by whichever call noticed first (a
// reconcile's Setup or Sync, LeaseData, PublicKey). The plugin's renewal
// waits on it, so that the leases publish the new public key as soon as
// the devices use the new key, not at its next check.
func (b *Backend) KeyChanged() <-chan struct{} {
	b.keyMu.Lock()
	defer b.keyMu.Unlock()
	if b.keyChanged == nil {
		b.keyChanged = make(chan struct{})
	}
	return b.keyChanged
}

// DeviceName is n's device's (DeviceName), for a valid pool.
func (*Backend) DeviceName(n overlay.Network) string {
	if n.Pool.IsValid() && n.Pool.Addr().Is4() {
		return DeviceName(n.Pool)
	}
	return ""
}

// DeviceName is the WireGuard device of the network with this pool:
// "feltw." and the pool's address in hex, 10.42.0.0/16 -> feltw.0a2a0000,
// as udp's feltu.… (pools of felt networks never overlap).
func DeviceName(pool netip.Prefix) string {
	a := pool.Masked().Addr().As4()
	return fmt.Sprintf("feltw.%02x%02x%02x%02x", a[0], a[1], a[2], a[3])
}

// Check has nothing to refuse from the leases: WireGuard reaches any peer
// the underlay routes to. The port is checked by Setup, which knows the
// networks served here.
func (*Backend) Check(context.Context, overlay.Network, func(context.Context) ([]lease.Lease, error)) error {
	return nil
}

// complete checks n and fills in the defaults the driver normally has; it
// returns n's device name too.
func (b *Backend) complete(n overlay.Network) (overlay.Network, string, error) {
	n, err := overlay.CompleteTunnel(Name, n, DefaultPort, b.Overhead(), b.cfg.Host)
	if err != nil {
		return n, "", err
	}
	return n, DeviceName(n.Pool), nil
}

// locked completes n and calls f with it, its device name and what the
// backend keeps for it (nil if nothing yet), under the backend's lock.
func (b *Backend) locked(n overlay.Network, f func(n overlay.Network, name string, st *wgNet) error) error {
	n, name, err := b.complete(n)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return f(n, name, b.nets[n.ID])
}
