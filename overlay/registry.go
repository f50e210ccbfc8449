package overlay

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/lease"
)

// Backends is the registry of the backends this felt offers, in the order
// registered; the first is the default, the backend of a network created
// without -o backend. overlay/backends.All registers felt's backends, each
// from its own package (overlay/vxlan, overlay/hostgw, overlay/udp), and
// plugin.Build uses it.
// It implements lease.Backends, which is how the shared network record
// learns the default backend, which backends need a VNI, and default ports.
type Backends struct {
	list []Backend
}

var _ lease.Backends = (*Backends)(nil)

// NewBackends registers bs; the first is the default. Two backends with one
// name, or one without a name, are a programming error: it panics.
func NewBackends(bs ...Backend) *Backends {
	r := &Backends{}
	for _, b := range bs {
		switch {
		case b.Name() == "":
			panic("overlay: a backend without a name")
		case r.lookup(b.Name()) != nil:
			panic(fmt.Sprintf("overlay: backend %q registered twice", b.Name()))
		}
		r.list = append(r.list, b)
	}
	return r
}

func (r *Backends) lookup(name string) Backend {
	if r == nil {
		return nil
	}
	for _, b := range r.list {
		if b.Name() == name {
			return b
		}
	}
	return nil
}

// Get returns the backend called name.
func (r *Backends) Get(name string) (Backend, error) {
	if b := r.lookup(name); b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("backend %q is not available", name)
}

// Names lists the registered backends, the default first.
func (r *Backends) Names() []string {
	if r == nil {
		return nil
	}
	out := make([]string, 0, len(r.list))
	for _, b := range r.list {
		out = append(out, b.Name())
	}
	return out
}

// Taking lists the backends whose Options satisfy takes, e.g. those that
// take -o port, for the driver's messages.
func (r *Backends) Taking(takes func(Options) bool) []string {
	var out []string
	for _, name := range r.Names() {
		if takes(r.lookup(name).Options()) {
			out = append(out, name)
		}
	}
	return out
}

// Default is the backend of a network created without -o backend.
func (r *Backends) Default() string {
	if r == nil || len(r.list) == 0 {
		return ""
	}
	return r.list[0].Name()
}

// NeedsVNI says whether backend's networks need a VNI.
func (r *Backends) NeedsVNI(backend string) bool {
	b := r.lookup(backend)
	return b != nil && b.Options().VNI
}

// DefaultPort is the port of backend's networks when none is given, 0 when
// it takes none.
func (r *Backends) DefaultPort(backend string) int {
	if b := r.lookup(backend); b != nil {
		return b.Options().DefaultPort
	}
	return 0
}

// Overhead is the bytes backend's encapsulation adds to each packet.
func (r *Backends) Overhead(backend string) (int, error) {
	b, err := r.Get(backend)
	if err != nil {
		return 0, err
	}
	return b.Overhead(), nil
}

// LeaseData is the backend data of this host's lease of pool: the merged
// LeaseData of every registered backend. All of them, not the network's
// own: a host's lease is acquired at RequestPool time (IPAM), before
// CreateNetwork says which backend the network uses, and the lease serves
// whatever backend the network ends up with. A key two backends publish,
// or one of lease's own, is refused.
func (r *Backends) LeaseData(pool netip.Prefix) (json.RawMessage, error) {
	merged := map[string]json.RawMessage{}
	owner := map[string]string{}
	for _, b := range r.list {
		fields, err := objectFields(b.LeaseData(pool))
		if err != nil {
			return nil, fmt.Errorf("backend %s: lease data: %w", b.Name(), err)
		}
		for k, v := range fields {
			if lease.IsLeaseKey(k) {
				return nil, fmt.Errorf("backend %s: lease data key %q is one of the lease record's own", b.Name(), k)
			}
			if other, ok := owner[k]; ok {
				return nil, fmt.Errorf("backends %s and %s both publish lease data key %q", other, b.Name(), k)
			}
			merged[k], owner[k] = v, b.Name()
		}
	}
	if len(merged) == 0 {
		return nil, nil
	}
	return json.Marshal(merged)
}

// objectFields are the fields of v encoded as a JSON object; none for nil.
func objectFields(v any) (map[string]json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("%.80s is not a JSON object", data)
	}
	return fields, nil
}

// BackendConfig is what the standard backends share.
type BackendConfig struct {
	// Netlink is a handle bound to the host's network namespace; nil means
	// the current one.
	Netlink *netlink.Handle
	Host    Host
	// HostID names this host: vxlan derives its VTEP MAC from it, which
	// must match what its leases advertise.
	HostID string
	// Instance names this felt in the owner mark of every device the
	// backends create (OwnerAlias); empty means the first 8 characters of
	// HostID, as the plugin derives it.
	Instance string
	// StateDir is where the wireguard backend keeps this host's private
	// key (wireguard.key); empty keeps a key made at start in memory only
	// (tests).
	StateDir string
	// WireGuard is how the wireguard backend runs WireGuard (FELT_WIREGUARD):
	// "auto" (empty) the kernel's where it works, else wireguard-go in user
	// space; "kernel"; "userspace".
	WireGuard string
	Log       *slog.Logger
}

// WithDefaults fills in what BackendConfig's comments say an empty field
// means.
func (c BackendConfig) WithDefaults() BackendConfig {
	c.Netlink = orDefault(c.Netlink)
	if c.Log == nil {
		c.Log = slog.Default()
	}
	c.Instance = instanceOf(c.Instance, c.HostID)
	return c
}

// orDefault turns a nil handle into one on the current namespace, which is
// what the netlink package's own functions use.
func orDefault(nl *netlink.Handle) *netlink.Handle {
	if nl == nil {
		return &netlink.Handle{}
	}
	return nl
}
