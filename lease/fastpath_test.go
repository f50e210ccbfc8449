package lease_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
)

// Acquire and Renew without listing the pool (issue #14): the lease at
// Prefer, the owner index, random probes; the listing only as a fallback.

// calls is a store that counts its calls by method, and the prefixes it
// was asked to list.
type calls struct {
	kv.Store
	mu    sync.Mutex
	n     map[string]int
	lists []string
}

func newCalls(s kv.Store) *calls { return &calls{Store: s, n: map[string]int{}} }

func (s *calls) count(op string) {
	s.mu.Lock()
	s.n[op]++
	s.mu.Unlock()
}

func (s *calls) Get(ctx context.Context, key string) (kv.Pair, error) {
	s.count("Get")
	return s.Store.Get(ctx, key)
}

func (s *calls) List(ctx context.Context, prefix string) ([]kv.Pair, uint64, error) {
	s.mu.Lock()
	s.n["List"]++
	s.lists = append(s.lists, prefix)
	s.mu.Unlock()
	return s.Store.List(ctx, prefix)
}

func (s *calls) CAS(ctx context.Context, key string, v []byte, index uint64) error {
	s.count("CAS")
	return s.Store.CAS(ctx, key, v, index)
}

func (s *calls) DeleteCAS(ctx context.Context, key string, index uint64) error {
	s.count("DeleteCAS")
	return s.Store.DeleteCAS(ctx, key, index)
}

func (s *calls) Txn(ctx context.Context, ops []kv.Op) (uint64, error) {
	s.count("Txn")
	return s.Store.Txn(ctx, ops)
}

// reset forgets what was counted.
func (s *calls) reset() {
	s.mu.Lock()
	s.n, s.lists = map[string]int{}, nil
	s.mu.Unlock()
}

func (s *calls) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := 0
	for _, n := range s.n {
		t += n
	}
	return t
}

// poolListings are the Lists of every lease of pool (not of a few keys).
func (s *calls) poolListings(pool netip.Prefix) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.lists {
		if p == "felt/leases/"+ipnet.Key(pool)+"/" || p == "felt/leases/" {
			out = append(out, p)
		}
	}
	return out
}

// countedStores runs test on each store (as eachStore), with the registry
// on a call-counting store, and a clock.
func countedStores(t *testing.T, test func(t *testing.T, r *lease.Registry, c *calls, now func() time.Time)) {
	t.Run("embedded", func(t *testing.T) {
		c := newCalls(newStore(t))
		clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		test(t, lease.NewRegistry(c, "felt/", clk), c, clk.Now)
	})
	t.Run("consul", func(t *testing.T) {
		c := newCalls(consulStore(t))
		test(t, lease.NewRegistry(c, "felt/", nil), c, time.Now)
	})
}

// others writes count leases of other hosts into pool, straight into the
// store as an older felt would (no owner entries), skipping skip.
func others(t *testing.T, s kv.Store, pool netip.Prefix, count int, now time.Time, skip ...netip.Prefix) {
	t.Helper()
	for i, k := 0, uint64(0); i < count; k++ {
		sub := ipnet.Subnet(pool, 24, k)
		if ok := !containsPrefix(skip, sub); ok {
			putLease(t, s, lease.Lease{Pool: pool, Subnet: sub, HostID: fmt.Sprint("other-", k),
				PublicIP: netip.AddrFrom4([4]byte{198, 51, byte(k >> 8), byte(k)}), Expiry: now.Add(time.Hour)})
			i++
		}
	}
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

func settle(t *testing.T, r *lease.Registry, p netip.Prefix) lease.Network {
	t.Helper()
	n, err := r.SettleNetwork(context.Background(), lease.Spec{Backends: leasetest.Backends, Pool: p})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A renewal reads the lease and writes it (and the network record): no
// listing, whatever the pool holds.
func TestRenewDoesNotList(t *testing.T) {
	countedStores(t, func(t *testing.T, r *lease.Registry, c *calls, now func() time.Time) {
		ctx := context.Background()
		n := settle(t, r, pool)
		others(t, c.Store, pool, 50, now())
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		c.reset()
		got, err := r.Renew(ctx, lease.RenewRequest{Network: n, Subnet: l.Subnet, Owner: owner("a", "192.0.2.1"), TTL: 2 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if got.Subnet != l.Subnet || !got.Expiry.After(l.Expiry) {
			t.Fatalf("renewed %+v; want %s with a later expiry than %s", got, l.Subnet, l.Expiry)
		}
		if c.n["List"] != 0 || c.total() > 6 {
			t.Fatalf("a renewal made %v (lists %v); want no List and at most 6 calls", c.n, c.lists)
		}
	})
}

// A fresh host's Acquire, and the same host's again without Prefer (found
// through the owner index), list a few keys at most, never the pool.
func TestAcquireDoesNotListThePool(t *testing.T) {
	countedStores(t, func(t *testing.T, r *lease.Registry, c *calls, now func() time.Time) {
		ctx := context.Background()
		n := settle(t, r, pool)
		others(t, c.Store, pool, 100, now())
		c.reset()
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if ls := c.poolListings(pool); len(ls) != 0 || c.total() > 30 {
			t.Fatalf("a fresh Acquire made %v, listing %v", c.n, c.lists)
		}
		c.reset()
		again, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.77"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if again.Subnet != l.Subnet || again.PublicIP.String() != "192.0.2.77" {
			t.Fatalf("again: %s %s; want %s with the new IP", again.Subnet, again.PublicIP, l.Subnet)
		}
		if c.n["List"] != 0 {
			t.Fatalf("Acquire of a held lease made %v, listing %v", c.n, c.lists)
		}
		ls, _ := r.Leases(ctx, pool)
		if len(ls) != 101 {
			t.Fatalf("%d leases, want 101", len(ls))
		}
	})
}

// A wiped host (new host ID, same public IP) takes its old lease over
// through the owner index, without listing, and says so.
func TestTakeoverThroughIndex(t *testing.T) {
	countedStores(t, func(t *testing.T, r *lease.Registry, c *calls, now func() time.Time) {
		ctx := context.Background()
		n := settle(t, r, pool)
		others(t, c.Store, pool, 20, now())
		old, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("old", "192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		c.reset()
		var told []string
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("new", "192.0.2.1"), TTL: time.Hour,
			OnTakeover: func(o lease.Lease, action string) { told = append(told, o.HostID+" "+action) }})
		if err != nil {
			t.Fatal(err)
		}
		if l.Subnet != old.Subnet || l.HostID != "new" {
			t.Fatalf("got %+v; want %s taken over", l, old.Subnet)
		}
		if fmt.Sprint(told) != "[old taken over]" {
			t.Fatalf("OnTakeover told %v", told)
		}
		if c.n["List"] != 0 {
			t.Fatalf("the takeover made %v, listing %v", c.n, c.lists)
		}
		// The old host's entry went with it.
		if _, err := c.Store.Get(ctx, "felt/lease-owners/"+ipnet.Key(pool)+"/host/old"); err == nil {
			t.Fatal("the old host ID's index entry is still there")
		}
		if ls, _ := r.Leases(ctx, pool); len(ls) != 21 {
			t.Fatalf("%d leases, want 21", len(ls))
		}
	})
}

// Entries that name a lease no longer theirs (or none) are not believed:
// another host's lease is left alone, a fresh subnet is leased, and the
// entries are rewritten to it.
func TestDanglingIndexEntries(t *testing.T) {
	countedStores(t, func(t *testing.T, r *lease.Registry, c *calls, now func() time.Time) {
		ctx := context.Background()
		n := settle(t, r, pool)
		peer, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("peer", "192.0.2.2"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		prefix := "felt/lease-owners/" + ipnet.Key(pool) + "/"
		// a's entries: by host ID at the peer's lease, by IP at a lease
		// that does not exist; and an unreadable one for another IP.
		for k, v := range map[string]string{
			prefix + "host/a":         fmt.Sprintf(`{"hostID":"a","subnet":%q}`, peer.Subnet),
			prefix + "ip/192.0.2.1":   `{"hostID":"a","subnet":"10.42.200.0/24"}`,
			prefix + "ip/192.0.2.3":   `not json`,
			prefix + "host/elsewhere": `{"hostID":"elsewhere","subnet":"10.99.0.0/24"}`,
		} {
			if err := c.Store.Put(ctx, k, []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if l.Subnet == peer.Subnet {
			t.Fatal("a dangling entry handed out the peer's subnet")
		}
		ls, _ := r.Leases(ctx, pool)
		if len(ls) != 2 {
			t.Fatalf("leases %v; want the peer's and a's", subnets(ls))
		}
		for _, k := range []string{prefix + "host/a", prefix + "ip/192.0.2.1"} {
			p, err := c.Store.Get(ctx, k)
			if err != nil || !strings.Contains(string(p.Value), l.Subnet.String()) {
				t.Fatalf("entry %s: %q, %v; want it naming %s", k, p.Value, err, l.Subnet)
			}
		}
		// The unreadable entry is dropped by the host that reads it.
		if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("c", "192.0.2.3"), TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if p, err := c.Store.Get(ctx, prefix+"ip/192.0.2.3"); err != nil || strings.Contains(string(p.Value), "not json") {
			t.Fatalf("unreadable entry: %q, %v; want it rewritten", p.Value, err)
		}
	})
}

// Leases written by an older felt have no entries. The host's own is
// still renewed at Prefer (and gets its entries); an earlier incarnation's
// is not found without listing, so a wiped host leases a second subnet
// until the old one expires: the cost of a mixed fleet, and nothing worse
// (no duplicate, the old lease untouched).
func TestOldFeltLeasesWithoutIndex(t *testing.T) {
	countedStores(t, func(t *testing.T, r *lease.Registry, c *calls, now func() time.Time) {
		ctx := context.Background()
		n := settle(t, r, pool)
		mine := lease.Lease{Pool: pool, Subnet: netip.MustParsePrefix("10.42.1.0/24"), HostID: "a",
			PublicIP: netip.MustParseAddr("192.0.2.1"), Expiry: now().Add(time.Hour)}
		old := lease.Lease{Pool: pool, Subnet: netip.MustParsePrefix("10.42.2.0/24"), HostID: "wiped",
			PublicIP: netip.MustParseAddr("192.0.2.2"), Expiry: now().Add(time.Hour)}
		putLease(t, c.Store, mine)
		putLease(t, c.Store, old)

		c.reset()
		got, err := r.Renew(ctx, lease.RenewRequest{Network: n, Subnet: mine.Subnet, Owner: owner("a", "192.0.2.1"), TTL: time.Hour})
		if err != nil || got.Subnet != mine.Subnet || c.n["List"] != 0 {
			t.Fatalf("renewing an older felt's lease: %+v, %v, calls %v", got, err, c.n)
		}
		// Now indexed: a's Acquire without Prefer finds it.
		if l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1"), TTL: time.Hour}); err != nil || l.Subnet != mine.Subnet {
			t.Fatalf("Acquire after the renewal: %+v, %v; want %s", l, err, mine.Subnet)
		}

		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("reborn", "192.0.2.2"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if l.Subnet == old.Subnet || l.Subnet == mine.Subnet {
			t.Fatalf("got %s, a subnet already leased", l.Subnet)
		}
		ls, _ := r.Leases(ctx, pool)
		if len(ls) != 3 {
			t.Fatalf("leases %v; want a's, the old unindexed one and the reborn host's", subnets(ls))
		}
		// With Prefer (the old subnet, from its saved state, had it kept
		// any), the old lease is met and taken over.
		l, err = r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("reborn2", "192.0.2.2"), TTL: time.Hour, Prefer: old.Subnet})
		if err != nil {
			t.Fatal(err)
		}
		if l.Subnet != old.Subnet {
			t.Fatalf("with Prefer %s: got %s", old.Subnet, l.Subnet)
		}
	})
}

// A pool with one free subnet: the probes most likely miss it, and the
// listing finds it; a full pool fails as it always did.
func TestNearlyFullPoolFallsBack(t *testing.T) {
	ctx := context.Background()
	r, clk := newRegistry(t)
	small := netip.MustParsePrefix("10.50.0.0/18") // 64 subnets
	n := settle(t, r, small)
	free := ipnet.Subnet(small, 24, 37)
	others(t, storeOf(t, r), small, 63, clk.Now(), free)
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("last", "192.0.2.1"), TTL: time.Hour})
	if err != nil || l.Subnet != free {
		t.Fatalf("got %s, %v; want the one free subnet %s", l.Subnet, err, free)
	}
	_, err = r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("one-too-many", "192.0.2.2"), TTL: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "no free /24 subnet left") {
		t.Fatalf("full pool: %v", err)
	}
}

// Leases of another length (a record made again with another subnet_len
// while hosts kept theirs) are never overlapped: one around a candidate
// (found by the transaction's checks) nor one inside it (by listing its
// keys).
func TestProbeAvoidsLeasesOfOtherLengths(t *testing.T) {
	countedStores(t, func(t *testing.T, r *lease.Registry, c *calls, now func() time.Time) {
		ctx := context.Background()
		n := settle(t, r, pool)
		within := netip.MustParsePrefix("10.42.4.0/22") // 10.42.4-7.0/24
		exp := now().Add(time.Hour)
		putLease(t, c.Store, lease.Lease{Pool: pool, Subnet: netip.MustParsePrefix("10.42.4.0/23"), HostID: "wide", PublicIP: netip.MustParseAddr("198.51.100.1"), Expiry: exp})
		putLease(t, c.Store, lease.Lease{Pool: pool, Subnet: netip.MustParsePrefix("10.42.6.128/25"), HostID: "narrow", PublicIP: netip.MustParseAddr("198.51.100.2"), Expiry: exp})
		want := netip.MustParsePrefix("10.42.7.0/24")
		for i := range 8 {
			host := fmt.Sprint("h", i)
			c.reset()
			l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(host, "192.0.2.1"), TTL: time.Hour, Within: within})
			if err != nil || l.Subnet != want {
				t.Fatalf("round %d: got %s, %v; want %s, the only subnet of %s no lease overlaps", i, l.Subnet, err, want, within)
			}
			if ls := c.poolListings(pool); len(ls) != 0 {
				t.Fatalf("round %d: listed the pool", i)
			}
			if err := r.Release(ctx, pool, l.Subnet, host); err != nil {
				t.Fatal(err)
			}
		}
		// One around the whole range: nothing left.
		putLease(t, c.Store, lease.Lease{Pool: pool, Subnet: netip.MustParsePrefix("10.42.0.0/21"), HostID: "wider", PublicIP: netip.MustParseAddr("198.51.100.3"), Expiry: exp})
		if l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("x", "192.0.2.1"), TTL: time.Hour, Within: within}); err == nil {
			t.Fatalf("got %s inside a live /21", l.Subnet)
		}
	})
}

// Hosts joining at once, many goroutines each acquiring for several hosts
// in a pool they fill to 3/4 (so probes miss and fall back): no two
// subnets the same or overlapping, and every lease in the store.
func TestConcurrentAcquiresNeverOverlap(t *testing.T) {
	eachStore(t, func(t *testing.T, r *lease.Registry) {
		ctx := context.Background()
		p := netip.MustParsePrefix("10.70.0.0/17") // 128 subnets
		n := settle(t, r, p)
		const workers, each = 20, 5
		got := make([][]netip.Prefix, workers)
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					k := w*each + i
					l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, TTL: time.Hour,
						Owner: lease.Owner{HostID: fmt.Sprint("j-", k), PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(k + 1)})}})
					if err != nil {
						errs[w] = err
						return
					}
					got[w] = append(got[w], l.Subnet)
				}
			})
		}
		wg.Wait()
		var all []netip.Prefix
		for w := range workers {
			if errs[w] != nil {
				t.Fatalf("worker %d: %v", w, errs[w])
			}
			all = append(all, got[w]...)
		}
		for i, a := range all {
			for _, b := range all[i+1:] {
				if a.Overlaps(b) {
					t.Fatalf("%s and %s both handed out", a, b)
				}
			}
		}
		ls, err := r.Leases(ctx, p)
		if err != nil || len(ls) != workers*each {
			t.Fatalf("%d leases in the store (%v), want %d", len(ls), err, workers*each)
		}
	})
}

// Release and expiry take the lease's entries with them: hosts that never
// come back leave no index behind.
func TestIndexEntriesGoWithTheLease(t *testing.T) {
	ctx := context.Background()
	r, clk := newRegistry(t)
	s := storeOf(t, r)
	n := settle(t, r, pool)
	a, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("b", "192.0.2.2"), TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	entries := func() []string {
		pairs, _, err := s.List(ctx, "felt/lease-owners/")
		if err != nil {
			t.Fatal(err)
		}
		var ks []string
		for _, p := range pairs {
			ks = append(ks, strings.TrimPrefix(p.Key, "felt/lease-owners/"+ipnet.Key(pool)+"/"))
		}
		return ks
	}
	if got := fmt.Sprint(entries()); got != "[host/a host/b ip/192.0.2.1 ip/192.0.2.2]" {
		t.Fatalf("entries %s", got)
	}
	if err := r.Release(ctx, pool, a.Subnet, "a"); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(entries()); got != "[host/b ip/192.0.2.2]" {
		t.Fatalf("after a's release: entries %s", got)
	}
	clk.Add(2 * time.Hour)
	all, _ := r.AllLeases(ctx)
	if r.RemoveExpired(ctx, all) != 1 {
		t.Fatal("b's lease not removed as expired")
	}
	if got := entries(); len(got) != 0 {
		t.Fatalf("after b expired: entries %v", got)
	}
}

// storeOf is the store under r: tests write through it what an older felt
// (or another host) would.
func storeOf(t *testing.T, r *lease.Registry) kv.Store {
	t.Helper()
	return lease.StoreOf(r)
}

// Held is one read: a lease of the host, another host's, none.
func TestHeld(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	n := settle(t, r, pool)
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		subnet netip.Prefix
		host   string
		want   bool
	}{
		{l.Subnet, "a", true},
		{l.Subnet, "b", false},
		{netip.MustParsePrefix("10.42.250.0/24"), "a", l.Subnet.String() == "10.42.250.0/24"},
	} {
		if got, err := r.Held(ctx, pool, c.subnet, c.host); err != nil || got != c.want {
			t.Errorf("Held(%s, %s) = %v, %v; want %v", c.subnet, c.host, got, err, c.want)
		}
	}
}
