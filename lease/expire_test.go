package lease_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
)

// RemoveExpired deletes the given leases that are past their expiry by the
// registry's clock; a permanent or live lease stays, and so does one
// renewed since it was listed (the delete is conditional).
func TestRemoveExpired(t *testing.T) {
	ctx := context.Background()
	r, clk := newRegistry(t)
	n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	// The dead host's lease is of another pool: Acquire removes the
	// expired leases of the pool it claims from itself.
	other, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: netip.MustParsePrefix("10.43.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	acquire := func(n lease.Network, host, ip string, ttl time.Duration) lease.Lease {
		t.Helper()
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(host, ip), TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	dead := acquire(other, "dead", "192.0.2.1", time.Minute)
	renewed := acquire(n, "renewed", "192.0.2.2", time.Minute)
	permanent := acquire(n, "permanent", "192.0.2.3", 0)
	live := acquire(n, "live", "192.0.2.4", 24*time.Hour)
	clk.Add(time.Hour)
	listed, err := r.AllLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	acquire(n, "renewed", "192.0.2.2", time.Minute) // after the listing
	if got := r.RemoveExpired(ctx, listed); got != 1 {
		t.Fatalf("%d removed, want 1 (%s's)", got, dead.HostID)
	}
	ls, err := r.AllLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{renewed.Subnet.String(), permanent.Subnet.String(), live.Subnet.String()}
	slices.Sort(want)
	if got := subnets(ls); !slices.Equal(got, want) {
		t.Fatalf("leases left %v, want %v", got, want)
	}
}
