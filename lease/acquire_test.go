package lease_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
)

func TestAcquireReusesAndExpires(t *testing.T) {
	ctx := context.Background()
	r, clk := newRegistry(t)
	n, _ := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
	a, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.10"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if a.Subnet.Bits() != 24 || !pool.Contains(a.Subnet.Addr()) {
		t.Fatalf("subnet %s not a /24 of %s", a.Subnet, pool)
	}
	// Same host, new IP: same subnet, updated in place.
	again, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.99"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if again.Subnet != a.Subnet || again.PublicIP.String() != "192.0.2.99" {
		t.Fatalf("re-acquire: got %s %s, want %s with the new IP", again.Subnet, again.PublicIP, a.Subnet)
	}
	// Another host asking for a's subnet does not get it while it is live...
	b, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("b", "192.0.2.11"), TTL: time.Hour, Prefer: a.Subnet})
	if err != nil {
		t.Fatal(err)
	}
	if b.Subnet == a.Subnet {
		t.Fatal("two hosts hold the same subnet")
	}
	// ...but does once a's lease expired.
	clk.Add(2 * time.Hour)
	c, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("c", "192.0.2.12"), TTL: time.Hour, Prefer: a.Subnet})
	if err != nil {
		t.Fatal(err)
	}
	if c.Subnet != a.Subnet {
		t.Fatalf("expired subnet not reused: got %s want %s", c.Subnet, a.Subnet)
	}
}

func TestAcquireWithinRange(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	n, _ := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
	within := netip.MustParsePrefix("10.42.7.128/25")
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.10"), Within: within})
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet.String() != "10.42.7.0/24" {
		t.Fatalf("got %s, want the /24 holding the range", l.Subnet)
	}
}

func TestExhaustion(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	small := netip.MustParsePrefix("10.50.0.0/23")
	n, _ := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: small})
	for i, h := range []string{"a", "b"} {
		if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(h, fmt.Sprintf("192.0.2.%d", i+1))}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("c", "192.0.2.3")})
	if err == nil || !strings.Contains(err.Error(), "no free /24 subnet left") {
		t.Fatalf("error = %v", err)
	}
}

// Many hosts racing: every one gets a subnet and no two get the same.
func TestConcurrentAcquireNoDuplicates(t *testing.T) {
	r, _ := newRegistry(t)
	leasetest.RaceAcquire(t, r, netip.MustParsePrefix("10.60.0.0/19"), 20) // 32 subnets
}

// Picking a subnet of a huge pool (a /8 in /30s: four million subnets; a /1:
// half a billion) costs memory in proportion to the leases, not to the
// subnets: it used to list every free candidate (hundreds of MB for the /8,
// out of memory for the /1).
func TestAcquireMemoryIndependentOfPoolSize(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	for i, p := range []string{"10.0.0.0/8", "128.0.0.0/1"} {
		pool := netip.MustParsePrefix(p)
		n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, SubnetLen: 30})
		if err != nil {
			t.Fatal(err)
		}
		for j := range 3 {
			if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(fmt.Sprintf("warm-%d-%d", i, j), fmt.Sprintf("192.0.2.%d", 10*i+j+1))}); err != nil {
				t.Fatal(err)
			}
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(fmt.Sprintf("h-%d", i), fmt.Sprintf("192.0.2.%d", 100+i))})
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
			t.Fatalf("pool %s in /30s: one Acquire allocated %d bytes, want under 4 MiB", pool, got)
		}
		if l.Subnet.Bits() != 30 || !pool.Contains(l.Subnet.Addr()) {
			t.Fatalf("got %s, want a /30 of %s", l.Subnet, pool)
		}
	}
}

// The choice among free subnets stays random (hosts starting together
// rarely collide) and skips taken ones, and a preferred free subnet wins.
func TestAcquireRandomAmongFree(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	n, _ := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: netip.MustParsePrefix("10.50.0.0/20")}) // 16 subnets
	seen := map[netip.Prefix]bool{}
	for i := range 16 {
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(fmt.Sprint("h", i), fmt.Sprintf("192.0.2.%d", i+1))})
		if err != nil {
			t.Fatal(err)
		}
		if seen[l.Subnet] {
			t.Fatalf("%s handed out twice", l.Subnet)
		}
		seen[l.Subnet] = true
	}
	ls, _ := r.Leases(ctx, n.Pool)
	first := ls[0].Subnet
	if err := r.Release(ctx, n.Pool, first, ls[0].HostID); err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("late", "192.0.2.99"), Prefer: netip.MustParsePrefix("10.50.3.0/24")})
	if err != nil || l.Subnet != first {
		t.Fatalf("got %s (%v), want the only free subnet %s", l.Subnet, err, first)
	}
	// Lowest-first would always give 10.50.0.0/24 to a first host.
	firsts := map[netip.Prefix]bool{}
	for i := range 20 {
		r, _ := newRegistry(t)
		n, _ := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: netip.MustParsePrefix("10.50.0.0/16")})
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(fmt.Sprint("h", i), "192.0.2.1")})
		if err != nil {
			t.Fatal(err)
		}
		firsts[l.Subnet] = true
	}
	if len(firsts) < 2 {
		t.Fatalf("20 first hosts all got %v: the choice is not random", firsts)
	}
}

// An earlier incarnation's lease is taken over, on each store.
func TestReincarnationTakesOverLease(t *testing.T) {
	eachStore(t, func(t *testing.T, r *lease.Registry) {
		leasetest.Reincarnation(t, r, netip.MustParsePrefix("10.61.0.0/16"))
	})
}

// An Acquire that fails leaves no lease: here the network record went
// (the pool's last lease released) and cannot be made again. The lease's
// transaction checks the record, so it is never written; before, the
// lease was written first and taken back when the record's rewrite
// failed. Either way the caller sees an error and holds nothing, so
// nothing would ever release a lease left (with TTL 0, never).
func TestFailedAcquireLeavesNoLease(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	n, err := lease.NewRegistry(s, "felt/", nil).SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "felt/networks/10.42.0.0-16"); err != nil {
		t.Fatal(err)
	}
	r := lease.NewRegistry(failNetworkWrites{s}, "felt/", nil)
	if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1")}); err == nil || !strings.Contains(err.Error(), "cannot be made again") {
		t.Fatalf("Acquire though the network record could not be made again: %v", err)
	}
	if ls, err := r.Leases(ctx, pool); err != nil || len(ls) != 0 {
		t.Fatalf("leases left behind by a failed Acquire: %+v %v", ls, err)
	}
	// The owner index entries written with the lease went with it.
	if pairs, _, err := s.List(ctx, "felt/lease-owners/"); err != nil || len(pairs) != 0 {
		t.Fatalf("index entries left behind by a failed Acquire: %v %v", pairs, err)
	}
}
