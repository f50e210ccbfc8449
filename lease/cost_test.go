package lease_test

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
)

// The store requests of a join, a renewal and a release, pinned (issue
// #14): each is paid by every felt of the cluster on every container
// start, and every write of a shared key wakes the watches of every host.
// A change that adds a request fails here; one that removes one updates
// the numbers.

func (s *calls) Put(ctx context.Context, key string, v []byte) error {
	s.count("Put")
	return s.Store.Put(ctx, key, v)
}

func (s *calls) Delete(ctx context.Context, key string) error {
	s.count("Delete")
	return s.Store.Delete(ctx, key)
}

// counts is what c counted, without the zero entries.
func (s *calls) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, n := range s.n {
		if n != 0 {
			out[k] = n
		}
	}
	return out
}

func countsString(m map[string]int) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s:%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

// costPool is big enough that a random probe rarely meets one of the
// others' leases; one that does costs one more List (of a few keys),
// which the test takes off (misses).
var costPool = netip.MustParsePrefix("10.80.0.0/12")

func TestRequestCost(t *testing.T) {
	countedStores(t, func(t *testing.T, r *lease.Registry, c *calls, now func() time.Time) {
		ctx := context.Background()
		n := settle(t, r, costPool)
		others(t, c.Store, costPool, 300, now())
		// As ipam does: the record is reserved (read) before each call.
		reserve := func() lease.Network {
			t.Helper()
			n, err := r.ReservePool(ctx, costPool, n.SubnetLen)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		check := func(op string, want map[string]int, probes bool) {
			t.Helper()
			got := c.counts()
			if probes && got["List"] > 1 {
				// Each probe that met a lease listed a few keys (tryCreate).
				got["List"] = 1
			}
			t.Logf("%s: %s (%d requests)", op, countsString(got), total(got))
			if !maps.Equal(got, want) {
				t.Errorf("%s made %s; want %s", op, countsString(got), countsString(want))
			}
			c.reset()
		}

		n = reserve()
		c.reset()
		a, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		// Two reads of the owner index, a listing of the candidate's few
		// keys, the lease's transaction.
		check("a fresh Acquire", map[string]int{"Get": 2, "List": 1, "Txn": 1}, true)

		n = reserve()
		c.reset()
		if _, err := r.Renew(ctx, lease.RenewRequest{Network: n, Subnet: a.Subnet, Owner: owner("a", "192.0.2.1"), TTL: 2 * time.Hour}); err != nil {
			t.Fatal(err)
		}
		// The lease read and written.
		check("a Renew", map[string]int{"Get": 1, "Txn": 1}, false)

		p, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("p", "192.0.2.2")})
		if err != nil {
			t.Fatal(err)
		}
		n = reserve()
		c.reset()
		got, err := r.Renew(ctx, lease.RenewRequest{Network: n, Subnet: p.Subnet, Owner: owner("p", "192.0.2.2")})
		if err != nil || got.Subnet != p.Subnet {
			t.Fatalf("renewed %+v, %v", got, err)
		}
		// A permanent lease renewed unchanged: its index stays (on
		// Consul, which skips a write of the same bytes, as on bolt).
		check("a Renew of a permanent lease", map[string]int{"Get": 1, "Txn": 1}, false)
		// What it returned is what the store holds, index included.
		ls, err := r.Leases(ctx, costPool)
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(ls, func(l lease.Lease) bool { return l.Subnet == p.Subnet }); i < 0 || !sameLease(ls[i], got) {
			t.Fatalf("renewed %#v; the store holds %v", got, ls)
		}
		c.reset()

		if err := r.Release(ctx, costPool, a.Subnet, "a"); err != nil {
			t.Fatal(err)
		}
		// The lease and its two owner entries read, removed in one
		// transaction with the host's names; the pool listed (was it the
		// last?).
		check("a Release", map[string]int{"Get": 3, "Txn": 1, "List": 1}, false)

		// The last lease of a pool: as above, then the record read,
		// marked "deleting", the pool listed again (a lease written before
		// the mark), the VNI claim read, record and claim removed in one
		// transaction.
		last := netip.MustParsePrefix("10.96.0.0/16")
		ln := settle(t, r, last)
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: ln, Owner: owner("a", "192.0.2.1")})
		if err != nil {
			t.Fatal(err)
		}
		c.reset()
		if err := r.Release(ctx, last, l.Subnet, "a"); err != nil {
			t.Fatal(err)
		}
		check("the last Release", map[string]int{"Get": 5, "Txn": 3, "List": 2}, false)
		if _, err := r.GetNetwork(ctx, last); err == nil {
			t.Fatal("the record outlived the last release")
		}
	})
}

func total(m map[string]int) int {
	t := 0
	for _, n := range m {
		t += n
	}
	return t
}

// sameLease compares two leases as the store holds them, index included
// (Lease's own index is not exported: the lease read back must be the
// one returned).
func sameLease(a, b lease.Lease) bool {
	return fmt.Sprintf("%#v", a) == fmt.Sprintf("%#v", b)
}

var _ kv.Store = (*calls)(nil)
