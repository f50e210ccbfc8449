package lease_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
)

// Renew extends the lease with a fresh expiry and the owner's current
// public IP, on the same subnet; a lease that vanished meanwhile is
// claimed again; a subnet another host holds now is refused, not swapped
// for another one.
func TestRenew(t *testing.T) {
	ctx := context.Background()
	r, clk := newRegistry(t)
	n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	renew := func(o lease.Owner) (lease.Lease, error) {
		return r.Renew(ctx, lease.RenewRequest{Network: n, Subnet: l.Subnet, Owner: o, TTL: time.Hour})
	}

	clk.Add(30 * time.Minute)
	got, err := renew(owner("a", "192.0.2.99"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Subnet != l.Subnet || got.PublicIP.String() != "192.0.2.99" || !got.Expiry.Equal(clk.Now().Add(time.Hour)) {
		t.Fatalf("renewed: %+v; want %s with the new IP, expiring an hour from now", got, l.Subnet)
	}

	// Expired and removed by a peer while this host was cut off.
	clk.Add(2 * time.Hour)
	all, err := r.AllLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := r.RemoveExpired(ctx, all); n != 1 {
		t.Fatalf("%d expired leases removed, want 1", n)
	}
	if got, err := renew(owner("a", "192.0.2.99")); err != nil || got.Subnet != l.Subnet {
		t.Fatalf("renewing a vanished lease: %+v, %v; want %s claimed again", got, err, l.Subnet)
	}

	// Taken by another host meanwhile.
	clk.Add(2 * time.Hour)
	if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("b", "192.0.2.2"), TTL: time.Hour, Prefer: l.Subnet}); err != nil {
		t.Fatal(err)
	}
	if got, err := renew(owner("a", "192.0.2.99")); err == nil || !strings.Contains(err.Error(), "no free") {
		t.Fatalf("renewing a subnet another host holds: %+v, %v; want refused", got, err)
	}
	ls, err := r.Leases(ctx, pool)
	if err != nil || len(ls) != 1 || ls[0].HostID != "b" {
		t.Fatalf("leases %+v, %v; want b's only", ls, err)
	}
}
