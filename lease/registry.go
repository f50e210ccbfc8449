package lease

import (
	"net/netip"
	"strings"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
)

// Registry reads and writes network records and leases under a key prefix.
// It alone knows where they live in the store:
//
//	<prefix>networks/<pool>         the network record (network.go)
//	<prefix>vnis/<vni>              a VNI claim, naming its pool (network.go)
//	<prefix>leases/<pool>/<subnet>  one host's lease of one subnet
//	<prefix>names/<name>            a cluster network's name claim, {"pool","uid"}:
//	                                valid while that pool's record carries that
//	                                declaration, live (cluster.go)
//	<prefix>dns/<pool>/<hostID>     one host's container names in one pool,
//	                                trusted while its lease there is live (dns.go)
//	<prefix>cluster-epoch           a random ID made once per store; another one
//	                                means the store was wiped (cluster.go)
//
// Callers (ipam, the overlay manager) see leases only through its methods:
// Acquire, Renew, Release, Leases, AllLeases, WatchLeases, RemoveExpired.
// The cluster sync loop sees declarations through Declare, Withdraw,
// Epoch, WatchNetworks and the records' Cluster field.
type Registry struct {
	store  kv.Store
	prefix string
	clock  Clock
}

// NewRegistry returns a Registry over store; prefix is e.g. "felt/". A nil
// clock is the system's.
func NewRegistry(store kv.Store, prefix string, clock Clock) *Registry {
	if clock == nil {
		clock = SystemClock{}
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &Registry{store: store, prefix: prefix, clock: clock}
}

// Now is the registry's clock: the time leases expire by. The overlay
// manager judges expiry by it too, so that a fake clock in a test moves
// both.
func (r *Registry) Now() time.Time { return r.clock.Now() }

// leasesPrefix is the key prefix under which all leases live; a single
// blocking query on it tells a host about every peer change (WatchLeases).
func (r *Registry) leasesPrefix() string { return r.prefix + "leases/" }

func (r *Registry) poolLeasesPrefix(pool netip.Prefix) string {
	return r.leasesPrefix() + ipnet.Key(pool) + "/"
}

func (r *Registry) leaseKey(pool, subnet netip.Prefix) string {
	return r.poolLeasesPrefix(pool) + ipnet.Key(subnet)
}
