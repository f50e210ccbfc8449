package state

import (
	"context"
	"net/netip"
	"strings"

	"github.com/felt-net/felt/internal/ipnet"
)

// Pool is this host's record of one RequestPool: the user's pool, the
// optional --ip-range, the subnet this host leased, and how many networks
// hold it (Docker reference-counts pools). Written by the IPAM; the network
// driver reads it to map the subnet Docker hands it back to its pool
// (PoolOfSubnet).
type Pool struct {
	ID      string       `json:"id"`
	Pool    netip.Prefix `json:"pool"`
	Range   netip.Prefix `json:"range,omitzero"`
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
	Refs    int          `json:"refs"`
}

// pools are keyed by pool ID ("felt/<pool>[/<range>]"), its slashes
// flattened.
func (s *Store) pools() table[Pool] { return table[Pool]{s, root + "pools/"} }

func poolName(id string) string { return strings.ReplaceAll(id, "/", "_") }

// Pool reads the record of pool request id; it reports false if absent.
func (s *Store) Pool(ctx context.Context, id string) (Pool, bool, error) {
	return s.pools().get(ctx, poolName(id))
}

// Pools lists every pool record, in key order.
func (s *Store) Pools(ctx context.Context) ([]Pool, error) { return s.pools().all(ctx) }

// PoolOfSubnet finds the pool record whose leased subnet is subnet; it
// reports false if none is.
func (s *Store) PoolOfSubnet(ctx context.Context, subnet netip.Prefix) (Pool, bool, error) {
	return s.pools().find(ctx, func(p Pool) bool { return p.Subnet == subnet })
}

// PutPool writes p's record.
func (s *Store) PutPool(ctx context.Context, p Pool) error {
	return s.pools().put(ctx, poolName(p.ID), p)
}

// DeletePool removes the record of pool request id; absent is fine.
func (s *Store) DeletePool(ctx context.Context, id string) error {
	return s.pools().delete(ctx, poolName(id))
}

// lastSubnets are keyed by pool.
func (s *Store) lastSubnets() table[netip.Prefix] {
	return table[netip.Prefix]{s, root + "last-subnet/"}
}

// LastSubnet is the subnet this host last leased in pool (invalid if
// none): asked for again, so containers are not stranded on restart. It
// outlives the pool record on purpose.
func (s *Store) LastSubnet(ctx context.Context, pool netip.Prefix) (netip.Prefix, error) {
	subnet, _, err := s.lastSubnets().get(ctx, ipnet.Key(pool))
	return subnet, err
}

// PutLastSubnet records subnet as this host's last in pool.
func (s *Store) PutLastSubnet(ctx context.Context, pool, subnet netip.Prefix) error {
	return s.lastSubnets().put(ctx, ipnet.Key(pool), subnet)
}
