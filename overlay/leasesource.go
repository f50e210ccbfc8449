package overlay

import (
	"context"
	"net/netip"
	"time"

	"github.com/felt-net/felt/lease"
)

// LeaseSource is what the Manager needs of the shared leases besides the
// watch (LeaseWatch): reading one pool's (Check), removing expired ones,
// and the clock they expire by. *lease.Registry is the one felt uses
// (plugin.Build); the Manager never sees the store or its keys. Unit tests
// pass a fake (fakes_test.go). The Manager lists no pool it does not
// serve: it follows the attached networks' pools through the watch alone.
type LeaseSource interface {
	// Leases lists pool's leases, expired ones included.
	Leases(ctx context.Context, pool netip.Prefix) ([]lease.Lease, error)
	// RemoveExpired deletes those of leases that are past their expiry and
	// says how many went.
	RemoveExpired(ctx context.Context, leases []lease.Lease) int
	// Now is the time leases expire by.
	Now() time.Time
}

// LeaseWatch follows the leases of the pools of the attached networks
// (*lease.Watch, made by lease.Registry.NewWatch; plugin.Build passes it).
// The Manager sets its pools on Attach and Detach (leasewatch.go) and reads
// its answers in Run.
type LeaseWatch interface {
	// SetPools sets the pools to follow (those of the attached networks);
	// a pool new to the watch is reported in the next Update's Changed once
	// it has been read, in an Update whose Gen is at least the generation
	// SetPools returns.
	SetPools(pools []netip.Prefix) uint64
	// Next blocks until a followed pool's leases may have changed since the
	// previous Next returned (the first call answers once something has
	// been read), or ctx ends. Store failures are retried inside the watch
	// and logged there; Next returns an error only for ctx or a closed
	// watch.
	Next(ctx context.Context) (lease.Update, error)
}
