package lease

import (
	"context"
	"fmt"
)

// WatchLeases is a blocking query on the leases of every pool, as Consul's:
// it returns all of them (expired ones included) once they may have
// changed after the index after, with the index to pass next time. After
// 0 answers at once; so does an index the store has passed already, so a
// change between two calls is never missed. A return does not promise a
// change (the store may wake a waiter for a write elsewhere).
//
// The store's index going backwards (Consul restored from a snapshot, or
// replaced by an empty one) comes back as index 0: the caller's next call
// answers at once, a fresh start, rather than waiting for the store to
// catch up with an index it may never reach again.
//
// One query serves every pool: a host attached to many networks holds one
// request open, not one per network.
func (r *Registry) WatchLeases(ctx context.Context, after uint64) ([]Lease, uint64, error) {
	pairs, next, err := r.store.Wait(ctx, r.leasesPrefix(), after)
	if err != nil {
		return nil, 0, fmt.Errorf("watching leases: %w", err)
	}
	if next < after {
		next = 0
	}
	return r.decodeLeases(pairs), next, nil
}

// WatchNetworks is a blocking query on the network records of every pool
// (declarations and tombstones included), as WatchLeases is on the leases:
// it returns once they may have changed after the index after, with the
// index to pass next time; 0, or an index the store has passed, answers at
// once. It returns no records: the caller (the cluster sync loop) reads
// them all with ListNetworks in each pass anyway, after any trigger.
// The store's index going backwards comes back as 0, as in WatchLeases.
func (r *Registry) WatchNetworks(ctx context.Context, after uint64) (uint64, error) {
	_, next, err := r.store.Wait(ctx, r.prefix+"networks/", after)
	if err != nil {
		return 0, fmt.Errorf("watching network records: %w", err)
	}
	if next < after {
		next = 0
	}
	return next, nil
}
