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

const (
	poolsPrefix      = root + "pools/"
	lastSubnetPrefix = root + "last-subnet/"
)

// poolKey flattens the ID's slashes: a pool ID is "felt/<pool>[/<range>]".
func poolKey(id string) string { return poolsPrefix + strings.ReplaceAll(id, "/", "_") }

// Pool reads the record of pool request id; it reports false if absent.
func (s *Store) Pool(ctx context.Context, id string) (Pool, bool, error) {
	var p Pool
	ok, err := s.get(ctx, poolKey(id), &p)
	return p, ok, err
}

// Pools lists every pool record, in key order.
func (s *Store) Pools(ctx context.Context) ([]Pool, error) {
	return list[Pool](ctx, s, poolsPrefix)
}

// PoolOfSubnet finds the pool record whose leased subnet is subnet; it
// reports false if none is.
func (s *Store) PoolOfSubnet(ctx context.Context, subnet netip.Prefix) (Pool, bool, error) {
	pools, err := s.Pools(ctx)
	if err != nil {
		return Pool{}, false, err
	}
	for _, p := range pools {
		if p.Subnet == subnet {
			return p, true, nil
		}
	}
	return Pool{}, false, nil
}

// PutPool writes p's record.
func (s *Store) PutPool(ctx context.Context, p Pool) error { return s.put(ctx, poolKey(p.ID), p) }

// DeletePool removes the record of pool request id; absent is fine.
func (s *Store) DeletePool(ctx context.Context, id string) error { return s.delete(ctx, poolKey(id)) }

// LastSubnet is the subnet this host last leased in pool (invalid if
// none): asked for again, so containers are not stranded on restart. It
// outlives the pool record on purpose.
func (s *Store) LastSubnet(ctx context.Context, pool netip.Prefix) (netip.Prefix, error) {
	var subnet netip.Prefix
	_, err := s.get(ctx, lastSubnetPrefix+ipnet.Key(pool), &subnet)
	return subnet, err
}

// PutLastSubnet records subnet as this host's last in pool.
func (s *Store) PutLastSubnet(ctx context.Context, pool, subnet netip.Prefix) error {
	return s.put(ctx, lastSubnetPrefix+ipnet.Key(pool), subnet)
}
