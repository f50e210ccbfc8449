package lease

import (
	"context"
	"fmt"
	"net/netip"
)

// Leases returns the current leases of pool, expired ones included.
func (r *Registry) Leases(ctx context.Context, pool netip.Prefix) ([]Lease, error) {
	pairs, _, err := r.store.List(ctx, r.poolLeasesPrefix(pool))
	if err != nil {
		return nil, fmt.Errorf("leases of %s: %w", pool, err)
	}
	return r.decodeLeases(pairs), nil
}

// AllLeases returns the current leases of every pool, expired ones
// included: what WatchLeases answers, without waiting.
func (r *Registry) AllLeases(ctx context.Context) ([]Lease, error) {
	pairs, _, err := r.store.List(ctx, r.leasesPrefix())
	if err != nil {
		return nil, fmt.Errorf("leases: %w", err)
	}
	return r.decodeLeases(pairs), nil
}
