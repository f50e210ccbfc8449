// Package ipam is felt's remote IPAM driver. Each felt pool (the user's
// --subnet) is split into host subnets; this host leases one through the
// lease registry and hands out container addresses from it. Pool and address
// records are persisted locally, so PoolIDs and allocations survive restarts
// (Docker replays nothing to a remote IPAM).
package ipam

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/state"
)

// poolIDPrefix starts every PoolID felt hands out.
const poolIDPrefix = "felt/"

// Pool is this host's record of one RequestPool: the user's pool, the
// optional --ip-range, the subnet this host leased, and how many networks
// hold it (Docker reference-counts pools).
type Pool struct {
	ID      string       `json:"id"`
	Pool    netip.Prefix `json:"pool"`
	Range   netip.Prefix `json:"range,omitzero"`
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
	Refs    int          `json:"refs"`
}

// PoolID renders a deterministic ID for (pool, range): the same request after
// a restart gets the same ID, and the ID alone tells which pool it names.
func PoolID(pool, rng netip.Prefix) string {
	id := poolIDPrefix + pool.String()
	if rng.IsValid() {
		id += "/" + rng.String()
	}
	return id
}

// ParsePoolID is the inverse of PoolID.
func ParsePoolID(id string) (pool, rng netip.Prefix, err error) {
	rest, ok := strings.CutPrefix(id, poolIDPrefix)
	parts := strings.Split(rest, "/")
	if !ok || (len(parts) != 2 && len(parts) != 4) {
		return pool, rng, fmt.Errorf("pool ID %q was not made by felt", id)
	}
	if pool, err = netip.ParsePrefix(parts[0] + "/" + parts[1]); err != nil {
		return pool, rng, fmt.Errorf("pool ID %q: %w", id, err)
	}
	if len(parts) == 4 {
		if rng, err = netip.ParsePrefix(parts[2] + "/" + parts[3]); err != nil {
			return pool, rng, fmt.Errorf("pool ID %q: %w", id, err)
		}
	}
	return pool, rng, nil
}

// validPoolID reports whether id is a PoolID as felt makes them, in
// canonical form: anything else names no pool of felt's (and two spellings
// must not reach the same record).
func validPoolID(id string) bool {
	pool, rng, err := ParsePoolID(id)
	return err == nil && PoolID(pool, rng) == id
}

func poolKey(id string) string { return state.Key("pools", strings.ReplaceAll(id, "/", "_")) }

// PoolsPrefix is where pool records live; the driver reads them to map a
// network's subnet back to its pool.
var PoolsPrefix = state.Key("pools") + "/"

func lastSubnetKey(pool netip.Prefix) string { return state.Key("last-subnet", ipnet.Key(pool)) }

// Options are the --ipam-opt keys felt understands.
var allowedIPAMOptions = []string{"subnet_len"}

// parseSubnetLen reads --ipam-opt subnet_len: the length of each host's
// subnet, between the pool's length and /30 (a /31 or /32 has no room for a
// gateway and a container).
func parseSubnetLen(opts map[string]string, pool netip.Prefix) (int, error) {
	for k := range opts {
		if k != "subnet_len" {
			return 0, fmt.Errorf("unknown --ipam-opt %q: felt's IPAM accepts only %s", k, strings.Join(allowedIPAMOptions, ", "))
		}
	}
	v, ok := opts["subnet_len"]
	if !ok {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimPrefix(v, "/"))
	if err != nil || n < pool.Bits() || n > 30 {
		return 0, fmt.Errorf("--ipam-opt subnet_len=%s: must be a number from %d to 30 (the prefix length of each host's subnet inside %s)", v, pool.Bits(), pool)
	}
	return n, nil
}
