package lease

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/felt-net/felt/kv"
)

// Release gives up hostID's lease on subnet (a no-op if it is not held by
// hostID), and removes the network record when no host holds a lease any more.
//
// It reads the lease at its key and the two entries of the owner index
// that may name it (owners.go), and removes the lease, the entries that
// do and the host's container names in one transaction; the pool is
// listed only to know whether that was its last lease (deleteNetwork).
func (r *Registry) Release(ctx context.Context, pool, subnet netip.Prefix, hostID string) error {
	p, err := r.store.Get(ctx, r.leaseKey(pool, subnet))
	switch {
	case errors.Is(err, kv.ErrNotFound):
	case err != nil:
		return fmt.Errorf("lease %s: %w", subnet, err)
	default:
		ls := r.decodeLeases([]kv.Pair{p})
		if len(ls) == 1 && ls[0].HostID == hostID {
			l := ls[0]
			// Its entries, if they name it (else they are another
			// lease's; an unreadable one is dropped by the next
			// Acquire that reads it).
			var owners []kv.Op
			for _, k := range r.ownerKeys(l) {
				e, ep, err := r.ownerHint(ctx, k)
				if err != nil {
					return fmt.Errorf("lease %s: release: %w", subnet, err)
				}
				if ep.Key != "" && e.HostID == l.HostID && e.Subnet == l.Subnet {
					owners = append(owners, kv.Op{Verb: kv.OpDeleteCAS, Key: k, Index: ep.ModifyIndex})
				}
			}
			// Its container names go with the host's lease (dns.go),
			// in the same transaction.
			names := kv.Op{Verb: kv.OpDelete, Key: r.dnsKey(pool, hostID)}
			ops := append(append([]kv.Op{{Verb: kv.OpDeleteCAS, Key: p.Key, Index: l.index}}, owners...), names)
			_, err := r.store.Txn(ctx, ops)
			if errors.Is(err, kv.ErrConflict) {
				// The lease or an entry changed since it was read: the
				// lease alone (if it is still that one), its entries by
				// forgetOwner's rule, the names anyway.
				err = r.removeLease(ctx, l, nil)
				if err == nil {
					err = r.DeleteNames(ctx, pool, hostID)
				}
			}
			if err != nil {
				return fmt.Errorf("lease %s: release: %w", subnet, err)
			}
		}
	}
	return r.ForgetNetwork(ctx, pool)
}

// ForgetNetwork removes the network record of pool (and its VNI claim) if
// no lease of pool is left: after the last release, and to undo the record
// of a request that failed before it got a lease, so that a refused request
// leaves nothing behind.
func (r *Registry) ForgetNetwork(ctx context.Context, pool netip.Prefix) error {
	if err := r.deleteNetwork(ctx, pool); err != nil {
		return fmt.Errorf("network %s: %w", pool, err)
	}
	return nil
}
