package lease

import "context"

// RemoveExpired deletes leases past their expiry (hosts that died without
// releasing), so that their subnets can be leased again; it says how many
// went. Each delete is conditional, so a lease renewed meanwhile stays; a
// removed lease's entries in the owner index (owners.go) go with it.
// Acquire removes the expired leases it meets as well: on the subnet it
// tries or prefers, named by its owner index entries, or all of the pool's
// when it lists them (claimListed).
func (r *Registry) RemoveExpired(ctx context.Context, leases []Lease) int {
	now := r.clock.Now()
	removed := 0
	for _, l := range leases {
		if l.Expired(now) && r.store.DeleteCAS(ctx, r.leaseKey(l.Pool, l.Subnet), l.index) == nil {
			removed++
			r.forgetOwner(ctx, l)
			_ = r.DeleteNames(ctx, l.Pool, l.HostID) // untrusted without the lease anyway (dns.go)
		}
	}
	return removed
}
