package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"time"

	"github.com/felt-net/felt/lease"
)

// Scope is the driver option that keeps a network to its host:
// `-o scope=local`. Any other value (or none) lets it be declared.
const (
	OptScope     = "scope"
	ScopeLocal   = "local"
	scopeCluster = "cluster"
)

// localOnly reports whether the user kept n to this host.
func localOnly(n Net) bool { return n.DriverOpts[OptScope] == ScopeLocal }

// declarationOf is what the cluster records of this host's network n, whose
// pool and --ip-range come from felt's own state: Docker 29 shows the subnet
// felt's IPAM returned, not the user's pool.
func declarationOf(n Net, rng netip.Prefix, host string, at time.Time) lease.Declaration {
	return lease.Declaration{
		UID: newUID(), Name: n.Name,
		DriverOpts: nilIfEmpty(n.DriverOpts), IPAMOpts: nilIfEmpty(n.IPAMOpts), Labels: nilIfEmpty(n.Labels),
		IPRange: rng, Internal: n.Internal, Attachable: n.Attachable,
		By: host, At: at,
	}
}

// differs says how this host's network n (with --ip-range rng) differs from
// declaration d, or "" if it is the same network: same name and every
// option the user gave. Maps compare by content; nil equals empty; driver
// options by meaning (canonicalOptions).
func differs(d *lease.Declaration, n Net, rng netip.Prefix) string {
	switch {
	case d.Name != n.Name:
		return fmt.Sprintf("name %q, not %q", n.Name, d.Name)
	case !sameDriverOptions(d.DriverOpts, n.DriverOpts):
		return fmt.Sprintf("options %v, not %v", n.DriverOpts, d.DriverOpts)
	case !maps.Equal(d.IPAMOpts, n.IPAMOpts):
		return fmt.Sprintf("IPAM options %v, not %v", n.IPAMOpts, d.IPAMOpts)
	case !maps.Equal(d.Labels, n.Labels):
		return fmt.Sprintf("labels %v, not %v", n.Labels, d.Labels)
	case d.IPRange != rng:
		return fmt.Sprintf("--ip-range %s, not %s", orNone(rng), orNone(d.IPRange))
	case d.Internal != n.Internal:
		return fmt.Sprintf("internal %t, not %t", n.Internal, d.Internal)
	case d.Attachable != n.Attachable:
		return fmt.Sprintf("attachable %t, not %t", n.Attachable, d.Attachable)
	}
	return ""
}

// createRequest reproduces declaration d of pool on this host. Per-host
// settings (--gateway, --aux-address) are never declared: felt refuses them
// outside the host's own subnet.
func createRequest(d *lease.Declaration, pool netip.Prefix) CreateRequest {
	return CreateRequest{
		Name: d.Name, Pool: pool, IPRange: d.IPRange,
		DriverOpts: d.DriverOpts, IPAMOpts: d.IPAMOpts, Labels: d.Labels,
		Internal: d.Internal, Attachable: d.Attachable,
	}
}

// newUID names one declaration: 128 random bits, so that a network removed
// and made again under the same name and pool is a different declaration.
func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

func orNone(p netip.Prefix) string {
	if !p.IsValid() {
		return "none"
	}
	return p.String()
}
