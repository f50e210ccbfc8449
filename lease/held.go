package lease

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/felt-net/felt/kv"
)

// Held reports whether hostID holds the lease of subnet in pool, expired or
// not: one read of that lease, where listing the pool's leases to find it
// costs as many records as the pool has (ipam's check for a vanished lease
// runs on every host every resync interval).
func (r *Registry) Held(ctx context.Context, pool, subnet netip.Prefix, hostID string) (bool, error) {
	p, err := r.store.Get(ctx, r.leaseKey(pool, subnet))
	if errors.Is(err, kv.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", subnet, err)
	}
	ls := r.decodeLeases([]kv.Pair{p})
	return len(ls) == 1 && ls[0].HostID == hostID, nil
}
