package lease_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// The Manager's view of the watch.
var _ overlay.LeaseWatch = (*lease.Watch)(nil)

// counting is a store that counts what its blocking queries answer, per
// prefix, and how many are open; down makes them fail.
type counting struct {
	kv.Store
	mu      sync.Mutex
	answers map[string]int // successful Waits by prefix
	bytes   int            // keys and values they returned
	open    int            // Waits in flight
	down    bool
	rewind  uint64 // subtracted from the indexes it answers (a restored store)
	swap    map[string][]byte
	drop    map[string]bool // keys left out of answers (not in a restored store)
}

func newCounting(s kv.Store) *counting { return &counting{Store: s, answers: map[string]int{}} }

// waitQueriesBlocked waits until s has open queries and their number has
// not changed for 100 ms: every query of the watch is blocked, waiting for
// a change.
func waitQueriesBlocked(t *testing.T, s *counting) {
	t.Helper()
	open := func() int { s.mu.Lock(); defer s.mu.Unlock(); return s.open }
	last, since := -1, time.Now()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		n := open()
		if n != last {
			last, since = n, time.Now()
		} else if n > 0 && time.Since(since) > 100*time.Millisecond {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watch's queries never all blocked (%d open)", n)
		}
	}
}

func (s *counting) Wait(ctx context.Context, prefix string, index uint64) ([]kv.Pair, uint64, error) {
	s.mu.Lock()
	s.open++
	down, rewind := s.down, s.rewind
	s.mu.Unlock()
	defer func() { s.mu.Lock(); s.open--; s.mu.Unlock() }()
	if down {
		select {
		case <-ctx.Done():
		case <-time.After(time.Millisecond):
		}
		return nil, 0, errors.New("store unreachable")
	}
	if index != 0 {
		index = index - indexBase + rewind
	}
	pairs, idx, err := s.Store.Wait(ctx, prefix, index)
	if err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pairs = slices.DeleteFunc(pairs, func(p kv.Pair) bool { return s.drop[p.Key] })
	for i, p := range pairs {
		if v, ok := s.swap[p.Key]; ok {
			pairs[i].Value = v
		}
	}
	s.answers[prefix]++
	for _, p := range pairs {
		s.bytes += len(p.Key) + len(p.Value)
	}
	return pairs, idx + indexBase - s.rewind, nil
}

// indexBase is added to the indexes counting answers, so that rewinding
// them never goes below 1.
const indexBase = 1 << 20

func (s *counting) snapshot() (map[string]int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.answers))
	for k, v := range s.answers {
		m[k] = v
	}
	return m, s.bytes
}

func (s *counting) set(f func(s *counting)) { s.mu.Lock(); f(s); s.mu.Unlock() }

func (s *counting) openWaits() int { s.mu.Lock(); defer s.mu.Unlock(); return s.open }

// waitOpen waits until want queries are open (a query that answered goes
// back to waiting, one stopped returns, soon after).
func waitOpen(t *testing.T, s *counting, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.openWaits() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d queries open; want %d", s.openWaits(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// putLease writes l's record where felt keeps it.
func putLease(t testing.TB, s kv.Store, l lease.Lease) {
	t.Helper()
	putLeaseAt(t, s, leaseKey(l.Pool, l.Subnet), l)
}

func leaseKey(pool, subnet netip.Prefix) string {
	return "felt/leases/" + ipnet.Key(pool) + "/" + ipnet.Key(subnet)
}

func putLeaseAt(t testing.TB, s kv.Store, key string, l lease.Lease) {
	t.Helper()
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), key, b); err != nil {
		t.Fatal(err)
	}
}

func mkLease(pool, subnet, host string) lease.Lease {
	return lease.Lease{Pool: netip.MustParsePrefix(pool), Subnet: netip.MustParsePrefix(subnet), HostID: host,
		PublicIP: netip.MustParseAddr("192.0.2.1"), Expiry: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// view is a watch with what its Updates told folded in, as a consumer
// (overlay's Manager) keeps it: each pool's leases by subnet, from the
// Resets and changes alone.
type view struct {
	*lease.Watch
	pools map[netip.Prefix]map[netip.Prefix]lease.Lease
}

func newView(w *lease.Watch) *view {
	return &view{Watch: w, pools: map[netip.Prefix]map[netip.Prefix]lease.Lease{}}
}

// update is an Update and every lease of the view after it.
type update struct {
	lease.Update
	// Leases are the leases of every pool told of so far, folded from
	// the Updates' changes (pools by key, then subnets by key), as the
	// Updates listed them whole before they told changes only.
	Leases []lease.Lease
}

// fold applies u to the view, checking what any Update must be: Changed
// is Changes' pools in key order, a pool is first told whole (a Reset),
// a change's leases are of its pool, and no subnet is both upserted and
// removed.
func (v *view) fold(t testing.TB, u lease.Update) update {
	t.Helper()
	keys := slices.Collect(maps.Keys(u.Changes))
	slices.SortFunc(keys, func(a, b netip.Prefix) int { return strings.Compare(ipnet.Key(a), ipnet.Key(b)) })
	if !slices.Equal(keys, u.Changed) {
		t.Fatalf("Changed %v; Changes are of %v", u.Changed, keys)
	}
	for _, p := range u.Changed {
		c := u.Changes[p]
		ls, ok := v.pools[p]
		switch {
		case c.Reset:
			ls = map[netip.Prefix]lease.Lease{}
			if len(c.Removed) > 0 {
				t.Fatalf("pool %s: a Reset removing %v", p, c.Removed)
			}
		case !ok:
			t.Fatalf("pool %s told a change (%s) before it was told whole", p, changeList(c))
		}
		for _, l := range c.Upserted {
			if l.Pool != p {
				t.Fatalf("pool %s told a lease of %s: %v", p, l.Pool, l)
			}
			if slices.Contains(c.Removed, l.Subnet) {
				t.Fatalf("pool %s: %s both upserted and removed", p, l.Subnet)
			}
			ls[l.Subnet] = l
		}
		for _, s := range c.Removed {
			delete(ls, s)
		}
		v.pools[p] = ls
	}
	out := update{Update: u}
	pools := slices.Collect(maps.Keys(v.pools))
	slices.SortFunc(pools, func(a, b netip.Prefix) int { return strings.Compare(ipnet.Key(a), ipnet.Key(b)) })
	for _, p := range pools {
		ls := slices.Collect(maps.Values(v.pools[p]))
		slices.SortFunc(ls, func(a, b lease.Lease) int { return strings.Compare(ipnet.Key(a.Subnet), ipnet.Key(b.Subnet)) })
		out.Leases = append(out.Leases, ls...)
	}
	return out
}

// changeList renders a pool's change: "reset", "+subnet=host", "-subnet".
func changeList(c lease.PoolChange) []string {
	var out []string
	if c.Reset {
		out = append(out, "reset")
	}
	for _, l := range c.Upserted {
		out = append(out, "+"+l.Subnet.String()+"="+l.HostID)
	}
	for _, s := range c.Removed {
		out = append(out, "-"+s.String())
	}
	return out
}

// next waits for w's next Update, and folds it into w.
func next(t testing.TB, w *view) update {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return w.fold(t, u)
}

// quiet asserts w's Next does not return for a while.
func quiet(t *testing.T, w *view) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if u, err := w.Next(ctx); err == nil {
		t.Fatalf("Next returned changes %v with nothing changed", u.Changes)
	}
}

// leaseList renders leases as "subnet=host", in their order.
func leaseList(ls []lease.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Subnet.String()+"="+l.HostID)
	}
	return out
}

func wantUpdate(t *testing.T, u update, leases []string, changed []netip.Prefix, complete bool) {
	t.Helper()
	got := leaseList(u.Leases)
	if !slices.Equal(got, leases) || !slices.Equal(u.Changed, changed) || u.Complete != complete {
		t.Fatalf("update: leases %v, changed %v, complete %v; want %v, %v, %v", got, u.Changed, u.Complete, leases, changed, complete)
	}
}

// poolA is pool (helpers_test.go); poolB is cluster_test.go's, 10.43.0.0/16.
var poolA = pool

// bucketOf is the prefix, among a pool's planned buckets, of subnet's key.
func bucketOf(t *testing.T, buckets []string, pool netip.Prefix, subnet string) string {
	t.Helper()
	k := ipnet.Key(netip.MustParsePrefix(subnet))
	for _, b := range buckets {
		if strings.HasPrefix(k, b) {
			return "felt/leases/" + ipnet.Key(pool) + "/" + b
		}
	}
	t.Fatalf("%s is in no bucket of %q", subnet, buckets)
	return ""
}

// A change in one bucket wakes Next once, with only its pool changed; the
// other buckets' queries are not answered again, and only the changed
// record is decoded. A write elsewhere wakes nobody.
func TestWatchChangeInOneBucket(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.1.0/24", "a"))
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.2.0/24", "b"))
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.200.0/24", "c"))
	putLease(t, s, mkLease("10.43.0.0/16", "10.43.7.0/24", "d"))

	w := newView(r.NewWatch(nil))
	defer w.Close()
	w.Tune(64, 16) // a /16 split into many small buckets
	buckets := lease.PlanBuckets([]netip.Prefix{poolA, poolB}, 64, 16)
	if len(buckets[0]) < 10 {
		t.Fatalf("plan %q: want the /16 split", buckets)
	}
	a := bucketOf(t, buckets[0], poolA, "10.42.1.0/24")
	if a == bucketOf(t, buckets[0], poolA, "10.42.2.0/24") {
		t.Fatalf("10.42.1.0 and 10.42.2.0 share bucket %s; the test needs them apart", a)
	}
	w.SetPools([]netip.Prefix{poolB, poolA})
	u := next(t, w)
	wantUpdate(t, u, []string{"10.42.1.0/24=a", "10.42.2.0/24=b", "10.42.200.0/24=c", "10.43.7.0/24=d"},
		[]netip.Prefix{poolA, poolB}, true)
	if d := w.Decodes(); d != 4 {
		t.Fatalf("decoded %d records at start; want 4", d)
	}
	before, _ := s.snapshot()
	if len(before) != len(buckets[0])+len(buckets[1]) {
		t.Fatalf("%d queries answered; want %d", len(before), len(buckets[0])+len(buckets[1]))
	}

	putLease(t, s, mkLease("10.42.0.0/16", "10.42.1.0/24", "a2"))
	u = next(t, w)
	wantUpdate(t, u, []string{"10.42.1.0/24=a2", "10.42.2.0/24=b", "10.42.200.0/24=c", "10.43.7.0/24=d"},
		[]netip.Prefix{poolA}, true)
	if d := w.Decodes(); d != 5 {
		t.Fatalf("decoded %d records after one changed; want 5", d)
	}
	time.Sleep(100 * time.Millisecond)
	after, _ := s.snapshot()
	for p, n := range after {
		want := before[p]
		if p == a {
			want++
		}
		if n != want {
			t.Errorf("query %s answered %d times, %d before the change of %s", p, n, before[p], a)
		}
	}

	// Writes outside the leases wake no query; Next stays quiet.
	if err := s.Put(context.Background(), "felt/networks/x", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	quiet(t, w)
	if d := w.Decodes(); d != 5 {
		t.Fatalf("decoded %d records after an unrelated write; want 5", d)
	}

	// A removal.
	if err := s.Delete(context.Background(), leaseKey(poolA, netip.MustParsePrefix("10.42.2.0/24"))); err != nil {
		t.Fatal(err)
	}
	u = next(t, w)
	wantUpdate(t, u, []string{"10.42.1.0/24=a2", "10.42.200.0/24=c", "10.43.7.0/24=d"}, []netip.Prefix{poolA}, true)
	// The embedded store answers every query after a delete (its index is
	// the last delete's); the unchanged answers wake no one, decode nothing.
	quiet(t, w)
	if d := w.Decodes(); d != 5 {
		t.Fatalf("decoded %d records after a removal; want 5", d)
	}
}

// A burst of changes in several buckets and pools before Next makes one
// Update.
func TestWatchCoalesces(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	// Not the store's first write: the embedded store gives that one index
	// 1, which is also what it answers for an empty prefix, so a query
	// waiting after 1 misses it (a boltkv bug, reported).
	if err := s.Put(context.Background(), "felt/networks/x", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	w := newView(r.NewWatch(nil))
	defer w.Close()
	w.Tune(64, 16)
	w.SetPools([]netip.Prefix{poolA, poolB})
	wantUpdate(t, next(t, w), nil, []netip.Prefix{poolA, poolB}, true)
	for _, sub := range []string{"10.42.1.0/24", "10.42.2.0/24", "10.42.99.0/24", "10.42.200.0/24"} {
		putLease(t, s, mkLease("10.42.0.0/16", sub, "x"))
	}
	putLease(t, s, mkLease("10.43.0.0/16", "10.43.5.0/24", "y"))
	for deadline := time.Now().Add(5 * time.Second); w.Decodes() < 5 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // from decoded to recorded: no wait, no I/O
	wantUpdate(t, next(t, w), []string{"10.42.1.0/24=x", "10.42.2.0/24=x", "10.42.200.0/24=x", "10.42.99.0/24=x", "10.43.5.0/24=y"},
		[]netip.Prefix{poolA, poolB}, true)
	quiet(t, w)
}

// A record at a key other than its lease's is not a lease: it could claim
// a subnet leased already, or one of another pool.
func TestWatchSkipsOddKeys(t *testing.T) {
	s := newStore(t)
	r := lease.NewRegistry(s, "felt/", nil)
	good := mkLease("10.42.0.0/16", "10.42.1.0/24", "a")
	putLease(t, s, good)
	putLeaseAt(t, s, "felt/leases/10.42.0.0-16/10.42.77.0-24", mkLease("10.42.0.0/16", "10.42.1.0/24", "thief"))
	putLeaseAt(t, s, "felt/leases/10.42.0.0-16/10.43.1.0-24", mkLease("10.43.0.0/16", "10.43.1.0/24", "other pool"))
	putLeaseAt(t, s, "felt/leases/10.42.0.0-16/10.42.5.0-24", mkLease("10.43.0.0/16", "10.42.5.0/24", "pool says B"))
	putLeaseAt(t, s, "felt/leases/10.42.0.0-16/10.42.6.0-24x", mkLease("10.42.0.0/16", "10.42.6.0/24", "key suffix"))
	putLeaseAt(t, s, "felt/leases/10.42.0.0-16/10.42.7.9-24", mkLease("10.42.0.0/16", "10.42.7.9/24", "not masked"))
	for key, value := range map[string]string{
		"10.42.8.0-24":  `{"pool":"10.42.0.0/16","subnet":"10.42.8.0/33","hostID":"bad"}`,
		"10.42.9.0-24":  `{not json`,
		"10.42.10.0-24": `{"pool":"10.42.0.0/16","hostID":"no subnet"}`,
	} {
		if err := s.Put(context.Background(), "felt/leases/10.42.0.0-16/"+key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	for _, target := range []uint64{256, 16} { // one bucket, and many
		w := newView(r.NewWatch(nil))
		w.Tune(64, target)
		w.SetPools([]netip.Prefix{poolA})
		wantUpdate(t, next(t, w), []string{"10.42.1.0/24=a"}, []netip.Prefix{poolA}, true)
		w.Close()
	}
}

// SetPools: a new pool is read and reported alone; a removed one's
// queries stop and it is reported with its leases gone. The budget
// planned again (the /10 shares it with the new pool) keeps what the
// old buckets knew: no spurious change.
func TestWatchSetPools(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	big := netip.MustParsePrefix("10.64.0.0/10")
	putLease(t, s, mkLease("10.64.0.0/10", "10.64.1.0/24", "a"))
	putLease(t, s, mkLease("10.64.0.0/10", "10.100.3.0/24", "b"))
	putLease(t, s, mkLease("10.43.0.0/16", "10.43.7.0/24", "d"))
	w := newView(r.NewWatch(nil))
	defer w.Close()
	w.SetPools([]netip.Prefix{big})
	wantUpdate(t, next(t, w), []string{"10.100.3.0/24=b", "10.64.1.0/24=a"}, []netip.Prefix{big}, true)
	waitOpen(t, s, 64)

	// Three more pools: the /10 loses buckets to them, merged from the old.
	four := []netip.Prefix{big, poolB, poolA, netip.MustParsePrefix("10.44.0.0/16")}
	w.SetPools(four)
	wantUpdate(t, next(t, w), []string{"10.43.7.0/24=d", "10.100.3.0/24=b", "10.64.1.0/24=a"},
		[]netip.Prefix{poolA, poolB, netip.MustParsePrefix("10.44.0.0/16")}, true)
	quiet(t, w)
	planned := 0
	for _, b := range lease.PlanBuckets(four, 64, 256) {
		planned += len(b)
	}
	if planned > 64 {
		t.Fatalf("%d buckets planned for 4 pools; want at most 64", planned)
	}
	waitOpen(t, s, planned)
	decodes := w.Decodes()
	putLease(t, s, mkLease("10.64.0.0/10", "10.127.0.0/24", "e"))
	wantUpdate(t, next(t, w), []string{"10.43.7.0/24=d", "10.100.3.0/24=b", "10.127.0.0/24=e", "10.64.1.0/24=a"},
		[]netip.Prefix{big}, true)
	if d := w.Decodes() - decodes; d != 1 {
		t.Fatalf("decoded %d records for one new lease after re-planning; want 1", d)
	}

	// Back to the /10 alone: split again, from what the merged buckets knew.
	w.SetPools([]netip.Prefix{big})
	wantUpdate(t, next(t, w), []string{"10.100.3.0/24=b", "10.127.0.0/24=e", "10.64.1.0/24=a"},
		[]netip.Prefix{poolA, poolB, netip.MustParsePrefix("10.44.0.0/16")}, true)
	quiet(t, w)
	waitOpen(t, s, 64)
	w.SetPools(nil)
	wantUpdate(t, next(t, w), nil, []netip.Prefix{big}, true)
	waitOpen(t, s, 0)
}

// The store failing: Next waits, the failure is logged once, and the
// watch recovers by itself, keeping what it knew meanwhile.
func TestWatchStoreErrors(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.1.0/24", "a"))
	var logs bytes.Buffer
	var logMu sync.Mutex
	w := newView(r.NewWatch(slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))))
	defer w.Close()
	w.FastRetry()
	w.Tune(64, 16)
	s.set(func(s *counting) { s.down = true })
	w.SetPools([]netip.Prefix{poolA})
	quiet(t, w)
	s.set(func(s *counting) { s.down = false })
	wantUpdate(t, next(t, w), []string{"10.42.1.0/24=a"}, []netip.Prefix{poolA}, true)

	// Down again: the query blocked when it went down answers the next
	// write; the one after it fails, and what it knew stays.
	s.set(func(s *counting) { s.down = true })
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.2.0/24", "b"))
	wantUpdate(t, next(t, w), []string{"10.42.1.0/24=a", "10.42.2.0/24=b"}, []netip.Prefix{poolA}, true)
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.2.0/24", "b2"))
	quiet(t, w)
	s.set(func(s *counting) { s.down = false })
	wantUpdate(t, next(t, w), []string{"10.42.1.0/24=a", "10.42.2.0/24=b2"}, []netip.Prefix{poolA}, true)

	logMu.Lock()
	defer logMu.Unlock()
	// Once a streak, not once a bucket or a retry.
	if n := strings.Count(logs.String(), "reading leases failed"); n != 2 {
		t.Errorf("failure logged %d times; want twice, once a streak:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "reading leases again"); n != 2 {
		t.Errorf("recovery logged %d times; want twice:\n%s", n, logs.String())
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// The store's index going backwards (restored from a snapshot): a record
// whose ModifyIndex is the one known may hold another lease now, so the
// bucket is read afresh.
func TestWatchIndexBackwards(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	a := mkLease("10.42.0.0/16", "10.42.1.0/24", "a")
	putLease(t, s, a)
	w := newView(r.NewWatch(nil))
	defer w.Close()
	w.SetPools([]netip.Prefix{poolA})
	wantUpdate(t, next(t, w), []string{"10.42.1.0/24=a"}, []netip.Prefix{poolA}, true)

	restored := a
	restored.HostID = "restored"
	b, _ := json.Marshal(restored)
	s.set(func(s *counting) {
		s.rewind = 1000
		s.swap = map[string][]byte{leaseKey(a.Pool, a.Subnet): b}
	})
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.2.0/24", "b")) // wakes the query
	wantUpdate(t, next(t, w), []string{"10.42.1.0/24=restored", "10.42.2.0/24=b"}, []netip.Prefix{poolA}, true)
	quiet(t, w)
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.3.0/24", "c")) // and it goes on from the new index
	wantUpdate(t, next(t, w), []string{"10.42.1.0/24=restored", "10.42.2.0/24=b", "10.42.3.0/24=c"}, []netip.Prefix{poolA}, true)
}

// The store's index going backwards to a state where a bucket is empty
// (restored from a snapshot taken before its leases): its leases are gone,
// and the watch must say so. It compared the empty answer with nothing
// (what it knew was dropped as untrustworthy) and saw no change, so the
// gone leases stayed in every Update, routed, until a write in the bucket.
func TestWatchIndexBackwardsToEmpty(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	a := mkLease("10.42.0.0/16", "10.42.1.0/24", "a")
	putLease(t, s, a)
	w := newView(r.NewWatch(nil))
	defer w.Close()
	w.SetPools([]netip.Prefix{poolA})
	wantUpdate(t, next(t, w), []string{"10.42.1.0/24=a"}, []netip.Prefix{poolA}, true)

	b := mkLease("10.42.0.0/16", "10.42.2.0/24", "b")
	s.set(func(s *counting) {
		s.rewind = 1000
		s.drop = map[string]bool{leaseKey(a.Pool, a.Subnet): true, leaseKey(b.Pool, b.Subnet): true}
	})
	putLease(t, s, b) // wakes the query, which answers the restored, empty bucket
	wantUpdate(t, next(t, w), nil, []netip.Prefix{poolA}, true)
}

// Each Update says the generation of the pools it was made under, which
// SetPools returns when it changes them (the same pools again: the same
// generation): the Manager tells by it an answer made before it followed
// a pool afresh.
func TestWatchUpdateGen(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.1.0/24", "a"))
	w := newView(r.NewWatch(nil))
	defer w.Close()
	g1 := w.SetPools([]netip.Prefix{poolA})
	if again := w.SetPools([]netip.Prefix{poolA}); again != g1 {
		t.Fatalf("SetPools with the same pools: generation %d, then %d", g1, again)
	}
	if u := next(t, w); u.Gen != g1 {
		t.Fatalf("Update's generation %d; want %d", u.Gen, g1)
	}
	g2 := w.SetPools(nil)
	g3 := w.SetPools([]netip.Prefix{poolA})
	if !(g1 < g2 && g2 < g3) {
		t.Fatalf("generations %d, %d, %d; want increasing", g1, g2, g3)
	}
	u := next(t, w)
	wantUpdate(t, u, []string{"10.42.1.0/24=a"}, []netip.Prefix{poolA}, true)
	if u.Gen != g3 {
		t.Fatalf("Update's generation %d; want %d", u.Gen, g3)
	}
}

// Close stops every query and waits for them; Next then fails, also one
// blocked in it. Next's own context ending returns at once.
func TestWatchClose(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	w := newView(r.NewWatch(nil))
	w.Tune(64, 16)
	w.SetPools([]netip.Prefix{poolA, poolB})
	next(t, w)
	if s.openWaits() < 2 {
		t.Fatalf("%d queries open; want many", s.openWaits())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with its context ended: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := w.Next(context.Background()); done <- err }()
	time.Sleep(50 * time.Millisecond)
	w.Close()
	if n := s.openWaits(); n != 0 {
		t.Fatalf("%d queries open after Close", n)
	}
	select {
	case err := <-done:
		if !errors.Is(err, lease.ErrWatchClosed) {
			t.Fatalf("blocked Next after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked after Close")
	}
	w.SetPools([]netip.Prefix{poolA}) // no effect
	if n := s.openWaits(); n != 0 {
		t.Fatalf("%d queries open after SetPools on a closed watch", n)
	}

	// Closed while its queries back off from a failing store: Close does
	// not wait out their backoff (2 s at most, here).
	s.set(func(s *counting) { s.down = true })
	w = newView(r.NewWatch(nil))
	w.Tune(64, 16)
	w.SetPools([]netip.Prefix{poolA, poolB})
	time.Sleep(1500 * time.Millisecond) // retries at 0.5 s, 1.5 s (and 3.5 s)
	start := time.Now()
	w.Close()
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Close took %v with the store failing", d)
	}
}

// The watch on each store, Consul's included: its empty buckets are
// answered again on writes next to them (Consul watches an empty prefix
// on the nearest node above it, and answers its table index), which must
// wake no one.
func TestWatchOnEachStore(t *testing.T) {
	for name, store := range map[string]func(*testing.T) kv.Store{"embedded": newStore, "consul": consulStore} {
		t.Run(name, func(t *testing.T) { testWatchOn(t, newCounting(store(t))) })
	}
}

func testWatchOn(t *testing.T, s *counting) {
	{
		ctx := context.Background()
		r := lease.NewRegistry(s, "felt/", nil)
		if err := s.Put(ctx, "felt/networks/x", []byte("{}")); err != nil { // not the first write (boltkv)
			t.Fatal(err)
		}
		putLease(t, s, mkLease("10.42.0.0/16", "10.42.1.0/24", "a"))
		putLease(t, s, mkLease("10.43.0.0/16", "10.43.7.0/24", "d"))
		w := newView(r.NewWatch(nil))
		defer w.Close()
		w.Tune(64, 16)
		w.SetPools([]netip.Prefix{poolA, poolB})
		wantUpdate(t, next(t, w), []string{"10.42.1.0/24=a", "10.43.7.0/24=d"}, []netip.Prefix{poolA, poolB}, true)
		time.Sleep(100 * time.Millisecond)
		before, _ := s.snapshot()

		const changes = 5
		for i := range changes {
			putLease(t, s, mkLease("10.42.0.0/16", "10.42.2.0/24", fmt.Sprint("b", i)))
			wantUpdate(t, next(t, w), []string{"10.42.1.0/24=a", fmt.Sprintf("10.42.2.0/24=b%d", i), "10.43.7.0/24=d"}, []netip.Prefix{poolA}, true)
		}
		quiet(t, w)
		after, _ := s.snapshot()
		n := 0
		for p, a := range after {
			n += a - before[p]
		}
		t.Logf("%d queries answered for %d changes in one bucket, %d buckets", n, changes, len(after))
		if err := s.Delete(ctx, leaseKey(poolA, netip.MustParsePrefix("10.42.2.0/24"))); err != nil {
			t.Fatal(err)
		}
		wantUpdate(t, next(t, w), []string{"10.42.1.0/24=a", "10.43.7.0/24=d"}, []netip.Prefix{poolA}, true)
		quiet(t, w)
	}
}

// SetPools with the pools it follows already changes nothing: no query
// restarted, no update.
func TestWatchSetSamePools(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.1.0/24", "a"))
	w := newView(r.NewWatch(nil))
	defer w.Close()
	w.Tune(64, 16)
	w.SetPools([]netip.Prefix{poolA, poolB})
	wantUpdate(t, next(t, w), []string{"10.42.1.0/24=a"}, []netip.Prefix{poolA, poolB}, true)
	before, _ := s.snapshot()
	w.SetPools([]netip.Prefix{poolB, poolA, poolB})
	quiet(t, w)
	if after, _ := s.snapshot(); len(after) != len(before) || w.Decodes() != 1 {
		t.Fatalf("queries answered %v after the same pools, %v before; %d decodes", after, before, w.Decodes())
	}
	for p, n := range before {
		if after, _ := s.snapshot(); after[p] != n {
			t.Fatalf("query %s answered again after the same pools", p)
		}
	}
}

// A bucket stopped while it fails (its pool no longer followed) ends its
// failure streak: the watch's recovery, and its next failure, are logged.
func TestWatchStreakOfStoppedBucket(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	if err := s.Put(context.Background(), "felt/networks/x", []byte("{}")); err != nil { // not the first write (boltkv)
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	count := func(msg string) int {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Count(logs.String(), msg)
	}
	w := newView(r.NewWatch(slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))))
	defer w.Close()
	w.FastRetry()
	s.set(func(s *counting) { s.down = true })
	w.SetPools([]netip.Prefix{poolA})
	time.Sleep(50 * time.Millisecond)
	w.SetPools([]netip.Prefix{poolB}) // poolA's query stops while failing
	time.Sleep(50 * time.Millisecond)
	s.set(func(s *counting) { s.down = false })
	wantUpdate(t, next(t, w), nil, []netip.Prefix{poolA, poolB}, true)
	for deadline := time.Now().Add(5 * time.Second); count("reading leases again") != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("recovery not logged:\n%s", logs.String())
		}
	}
	failed := count("reading leases failed")
	// Every bucket's query blocked first: one that started again between
	// "down" and the put would fail and never see the put.
	waitQueriesBlocked(t, s)
	s.set(func(s *counting) { s.down = true })
	putLease(t, s, mkLease("10.43.0.0/16", "10.43.1.0/24", "b")) // answered; the query after it fails
	wantUpdate(t, next(t, w), []string{"10.43.1.0/24=b"}, []netip.Prefix{poolB}, true)
	for deadline := time.Now().Add(5 * time.Second); count("reading leases failed") != failed+1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("second failure streak not logged:\n%s", logs.String())
		}
	}
}

// More pools than the query budget share one query on every lease (a query
// each would pass Consul's limit of connections per client address, and
// the refused pools would never be read): each pool still gets its own
// leases, none is emptied on the way into or out of sharing, and a change
// in one pool is seen.
func TestWatchMorePoolsThanBudgetShareOneQuery(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	p1, p2, p3 := netip.MustParsePrefix("10.41.0.0/16"), netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("10.43.0.0/16")
	putLease(t, s, mkLease("10.41.0.0/16", "10.41.1.0/24", "a"))
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.2.0/24", "b"))
	putLease(t, s, mkLease("10.43.0.0/16", "10.43.3.0/24", "c"))
	putLease(t, s, mkLease("10.44.0.0/16", "10.44.4.0/24", "unfollowed"))
	w := newView(r.NewWatch(nil))
	w.Tune(2, 256)
	defer w.Close()
	w.SetPools([]netip.Prefix{p1, p2})
	wantUpdate(t, next(t, w), []string{"10.41.1.0/24=a", "10.42.2.0/24=b"}, []netip.Prefix{p1, p2}, true)
	waitOpen(t, s, 2)

	// Three pools, budget two: one shared query, from what the two knew.
	w.SetPools([]netip.Prefix{p1, p2, p3})
	waitOpen(t, s, 1)
	u := next(t, w)
	wantUpdate(t, u, []string{"10.41.1.0/24=a", "10.42.2.0/24=b", "10.43.3.0/24=c"}, u.Changed, true)
	if !slices.Contains(u.Changed, p3) {
		t.Fatalf("changed %v; want the new pool %s in it", u.Changed, p3)
	}
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.9.0/24", "e"))
	u = next(t, w)
	wantUpdate(t, u, []string{"10.41.1.0/24=a", "10.42.2.0/24=b", "10.42.9.0/24=e", "10.43.3.0/24=c"}, u.Changed, true)
	// One lease written marks its own pool only, not every shared one
	// (the Manager then looks at one network's peers, not all).
	if !slices.Equal(u.Changed, []netip.Prefix{p2}) {
		t.Fatalf("changed %v; want only %s", u.Changed, p2)
	}
	if err := s.Delete(context.Background(), leaseKey(p3, netip.MustParsePrefix("10.43.3.0/24"))); err != nil {
		t.Fatal(err)
	}
	u = next(t, w)
	wantUpdate(t, u, []string{"10.41.1.0/24=a", "10.42.2.0/24=b", "10.42.9.0/24=e"}, u.Changed, true)
	if !slices.Equal(u.Changed, []netip.Prefix{p3}) {
		t.Fatalf("after a lease of %s went: changed %v; want only %s", p3, u.Changed, p3)
	}

	// A pool added to the running shared query whose lease the query took
	// in before the pool was followed (a 65th network's own lease,
	// written by Acquire before its Attach): no later answer names it, so
	// the SetPools that adds it does.
	p4 := netip.MustParsePrefix("10.44.0.0/16")
	putLease(t, s, mkLease("10.44.0.0/16", "10.44.5.0/24", "f"))
	time.Sleep(300 * time.Millisecond) // the shared query answers; it names no followed pool
	w.SetPools([]netip.Prefix{p1, p2, p4})
	u = next(t, w)
	wantUpdate(t, u, []string{"10.41.1.0/24=a", "10.42.2.0/24=b", "10.42.9.0/24=e", "10.44.4.0/24=unfollowed", "10.44.5.0/24=f"}, u.Changed, true)
	if !slices.Contains(u.Changed, p4) {
		t.Fatalf("after following %s: changed %v; want it in", p4, u.Changed)
	}
	w.SetPools([]netip.Prefix{p1, p2, p3})
	next(t, w)

	// Back under the budget: a query per pool again, started from the
	// shared query's records (complete at once, nothing lost).
	w.SetPools([]netip.Prefix{p1, p2})
	u = next(t, w)
	wantUpdate(t, u, []string{"10.41.1.0/24=a", "10.42.2.0/24=b", "10.42.9.0/24=e"}, u.Changed, true)
	waitOpen(t, s, 2)

	// Into sharing again with a pool that holds no lease at all: the new
	// shared query's first answer changes no record (the store holds only
	// the followed pools' leases, which it inherited), and still names it.
	for _, sub := range []string{"10.44.4.0/24", "10.44.5.0/24"} {
		if err := s.Delete(context.Background(), leaseKey(p4, netip.MustParsePrefix(sub))); err != nil {
			t.Fatal(err)
		}
	}
	p5 := netip.MustParsePrefix("10.45.0.0/16")
	w.SetPools([]netip.Prefix{p1, p2, p5})
	for u = next(t, w); !slices.Contains(u.Changed, p5); u = next(t, w) {
	}
	wantUpdate(t, u, []string{"10.41.1.0/24=a", "10.42.2.0/24=b", "10.42.9.0/24=e"}, u.Changed, true)
}

// wantChange asserts what u tells of pool p: reset or not, the leases
// upserted ("subnet=host", by subnet key) and the subnets removed.
func wantChange(t *testing.T, u update, p netip.Prefix, reset bool, upserted, removed []string) {
	t.Helper()
	c, ok := u.Changes[p]
	if !ok {
		t.Fatalf("no change of %s in %v", p, u.Changed)
	}
	var rm []string
	for _, s := range c.Removed {
		rm = append(rm, s.String())
	}
	if c.Reset != reset || !slices.Equal(leaseList(c.Upserted), upserted) || !slices.Equal(rm, removed) {
		t.Fatalf("change of %s: %v; want reset %v, upserted %v, removed %v", p, changeList(c), reset, upserted, removed)
	}
}

// An Update tells each pool's changes record by record: the first answer
// is the pool whole (a Reset), then a lease added, one rewritten, one
// removed, and a record rewritten into something that is no lease (a
// removal) are told as such, and nothing else of the pool; a lease added
// and removed between two Updates is not told at all. Across buckets.
func TestWatchUpdateTellsChanges(t *testing.T) {
	s := newStore(t)
	r := lease.NewRegistry(s, "felt/", nil)
	ctx := context.Background()
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.1.0/24", "a"))
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.2.0/24", "b"))
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.200.0/24", "c"))
	w := newView(r.NewWatch(nil))
	defer w.Close()
	w.Tune(64, 16)
	w.SetPools([]netip.Prefix{poolA})
	u := next(t, w)
	wantChange(t, u, poolA, true, []string{"10.42.1.0/24=a", "10.42.2.0/24=b", "10.42.200.0/24=c"}, nil)

	putLease(t, s, mkLease("10.42.0.0/16", "10.42.3.0/24", "d"))
	wantChange(t, next(t, w), poolA, false, []string{"10.42.3.0/24=d"}, nil)
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.2.0/24", "b2"))
	wantChange(t, next(t, w), poolA, false, []string{"10.42.2.0/24=b2"}, nil)
	if err := s.Delete(ctx, leaseKey(poolA, netip.MustParsePrefix("10.42.200.0/24"))); err != nil {
		t.Fatal(err)
	}
	wantChange(t, next(t, w), poolA, false, nil, []string{"10.42.200.0/24"})
	if err := s.Put(ctx, leaseKey(poolA, netip.MustParsePrefix("10.42.1.0/24")), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	u = next(t, w)
	wantChange(t, u, poolA, false, nil, []string{"10.42.1.0/24"})
	wantUpdate(t, u, []string{"10.42.2.0/24=b2", "10.42.3.0/24=d"}, []netip.Prefix{poolA}, true)
	// Back to a lease: told as upserted.
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.1.0/24", "a2"))
	wantChange(t, next(t, w), poolA, false, []string{"10.42.1.0/24=a2"}, nil)

	// Changes in several buckets, one subnet rewritten twice and one
	// removed, in quick succession: however Next groups them, the later
	// change of a subnet wins, and what the Updates tell folds into the
	// store's leases (checked by fold at each Update).
	func() {
		putLease(t, s, mkLease("10.42.0.0/16", "10.42.9.0/24", "e"))
		putLease(t, s, mkLease("10.42.0.0/16", "10.42.3.0/24", "d2"))
		if err := s.Delete(ctx, leaseKey(poolA, netip.MustParsePrefix("10.42.2.0/24"))); err != nil {
			t.Fatal(err)
		}
		putLease(t, s, mkLease("10.42.0.0/16", "10.42.3.0/24", "d3"))
	}()
	for deadline := time.Now().Add(5 * time.Second); ; {
		u = next(t, w)
		if got := leaseList(u.Leases); slices.Equal(got, []string{"10.42.1.0/24=a2", "10.42.3.0/24=d3", "10.42.9.0/24=e"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leases %v", leaseList(u.Leases))
		}
	}
	quiet(t, w)
}

// A pool no longer followed is told as a Reset with no lease; followed
// again, whole again (a Reset with its leases), whatever the Manager had
// of it before. Each first answer of a pool, and each re-read of it (the
// store's index went backwards), is a Reset.
func TestWatchResets(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.1.0/24", "a"))
	putLease(t, s, mkLease("10.43.0.0/16", "10.43.7.0/24", "d"))
	w := newView(r.NewWatch(nil))
	defer w.Close()
	w.SetPools([]netip.Prefix{poolA, poolB})
	u := next(t, w)
	wantChange(t, u, poolA, true, []string{"10.42.1.0/24=a"}, nil)
	wantChange(t, u, poolB, true, []string{"10.43.7.0/24=d"}, nil)

	w.SetPools([]netip.Prefix{poolA})
	u = next(t, w)
	wantChange(t, u, poolB, true, nil, nil)
	wantUpdate(t, u, []string{"10.42.1.0/24=a"}, []netip.Prefix{poolB}, true)
	putLease(t, s, mkLease("10.43.0.0/16", "10.43.8.0/24", "e")) // not followed: wakes no one
	quiet(t, w)
	w.SetPools([]netip.Prefix{poolA, poolB})
	u = next(t, w)
	wantChange(t, u, poolB, true, []string{"10.43.7.0/24=d", "10.43.8.0/24=e"}, nil)
	if _, ok := u.Changes[poolA]; ok {
		t.Fatalf("pool %s told again though it did not change: %v", poolA, changeList(u.Changes[poolA]))
	}

	// Restored from a snapshot: poolA's bucket is read afresh, whole.
	s.set(func(s *counting) { s.rewind = 1000 })
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.2.0/24", "b"))
	u = next(t, w)
	wantChange(t, u, poolA, true, []string{"10.42.1.0/24=a", "10.42.2.0/24=b"}, nil)
}

// Past the budget (one shared query): a change tells its own pool's
// records only, a pool added is told whole at once, and a lease of a pool
// not followed is told of no pool.
func TestWatchSharedQueryTellsChanges(t *testing.T) {
	s := newCounting(newStore(t))
	r := lease.NewRegistry(s, "felt/", nil)
	p1, p2, p3 := netip.MustParsePrefix("10.41.0.0/16"), netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("10.43.0.0/16")
	putLease(t, s, mkLease("10.41.0.0/16", "10.41.1.0/24", "a"))
	putLease(t, s, mkLease("10.43.0.0/16", "10.43.3.0/24", "c"))
	w := newView(r.NewWatch(nil))
	w.Tune(1, 256)
	defer w.Close()
	w.SetPools([]netip.Prefix{p1, p2})
	u := next(t, w)
	wantChange(t, u, p1, true, []string{"10.41.1.0/24=a"}, nil)
	wantChange(t, u, p2, true, nil, nil)
	putLease(t, s, mkLease("10.42.0.0/16", "10.42.2.0/24", "b"))
	u = next(t, w)
	wantChange(t, u, p2, false, []string{"10.42.2.0/24=b"}, nil)
	wantUpdate(t, u, []string{"10.41.1.0/24=a", "10.42.2.0/24=b"}, []netip.Prefix{p2}, true)
	putLease(t, s, mkLease("10.43.0.0/16", "10.43.4.0/24", "d")) // p3 not followed
	quiet(t, w)
	w.SetPools([]netip.Prefix{p1, p2, p3})
	u = next(t, w)
	wantChange(t, u, p3, true, []string{"10.43.3.0/24=c", "10.43.4.0/24=d"}, nil)
	wantUpdate(t, u, []string{"10.41.1.0/24=a", "10.42.2.0/24=b", "10.43.3.0/24=c", "10.43.4.0/24=d"}, []netip.Prefix{p3}, true)
}
