package lease

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
)

// Update is what a lease watch (Watch, watcher.go) answers: how the leases
// of the pools it follows changed since its previous Update, record by
// record. It carries the changes only, never the pools' other leases: a
// lease change costs its consumer the change, not the pool (issue #14:
// copying and walking 10,000 leases per change made felt's CPU per change
// grow with the pool). A consumer that needs a pool whole keeps it, from
// the Resets and changes (overlay's Manager does).
type Update struct {
	// Changes are, for each pool in Changed, how its leases changed.
	Changes map[netip.Prefix]PoolChange
	// Changed are the followed pools whose leases (any record: added,
	// removed, rewritten) changed since the previous Update, pools whose
	// first answer this is, and pools read afresh (a Reset each), in store
	// key order. A pool SetPools stopped following since the previous
	// Update is in Changed too, with a Reset and no leases: it is no
	// longer watched, and what was known of it is dropped.
	Changed []netip.Prefix
	// Complete: every followed pool has answered at least once, so a
	// lease missing from what the Updates told is really gone.
	Complete bool
	// Gen is the generation of the followed pools the Update was made
	// under: what the SetPools call that set them returned. An Update made
	// before a SetPools may be read after it; a pool that call followed
	// afresh is told of by a later Update only (Gen at least the call's),
	// with a Reset.
	Gen uint64
}

// PoolChange is how one pool's leases changed (Update.Changes).
type PoolChange struct {
	// Reset: Upserted is every lease of the pool (expired ones included),
	// and whatever was known of it before is to be forgotten. A pool's
	// first answer since it was followed is a Reset, and so is a pool read
	// afresh (the store's index went backwards: restored from a snapshot),
	// and a pool no longer followed (with no lease).
	Reset bool
	// Upserted are the pool's leases added or rewritten (a renewal
	// included), by subnet key; with Reset, all of them.
	Upserted []Lease
	// Removed are the subnets whose lease went: its record deleted, or
	// rewritten into something that is no lease (Reset: none).
	Removed []netip.Prefix
}

// ErrWatchClosed is what Next returns once the watch is closed.
var ErrWatchClosed = errors.New("lease watch closed")

// Watch follows the leases of a set of pools with several blocking queries
// rather than one over every lease (WatchLeases): each pool's subnet keys
// are split into buckets of textual key prefixes (watcher_plan.go), each
// followed by its own query, so a change costs the bytes of its bucket,
// not of every lease. Each bucket keeps its last records by key with their
// ModifyIndex and decodes only those whose index changed; an answer that
// changed nothing does not wake Next. Store failures are retried per
// bucket with backoff, keeping what was known.
//
// Make it with Registry.NewWatch; Close stops every query.
type Watch struct {
	r      *Registry
	log    *slog.Logger
	budget int
	target uint64
	// coalesce is how long Next waits after a first change for others to
	// join it; settle how long it waits at most for every bucket to have
	// answered before it reports an incomplete update.
	coalesce, settle time.Duration
	retry, retryMax  time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // 1-buffered: something changed

	mu      sync.Mutex
	closed  bool
	pools   []*watchedPool              // followed, sorted by key
	set     []netip.Prefix              // their prefixes, as SetPools had them last
	changed map[netip.Prefix]*poolDelta // what the next Update tells, by pool
	failing int                         // buckets in a failure streak
	gen     uint64                      // SetPools calls that changed the pools

	decodes atomic.Int64 // records decoded, for tests and benchmarks
}

// watchedPool is one followed pool: its buckets, sorted by prefix, so
// their leases come in key order.
type watchedPool struct {
	pool    netip.Prefix
	key     string // the pool's key prefix, "<prefix>leases/<pool>/"
	buckets []*bucket
}

// bucket is one blocking query on a prefix of a pool's lease keys.
type bucket struct {
	prefix string // the whole store prefix
	pool   netip.Prefix
	cancel context.CancelFunc

	// Guarded by Watch.mu.
	stopped  bool
	answered bool
	// records are, by key, what the last answer held. Only the bucket's
	// own query (take) changes them, under Watch.mu, in place: an answer
	// costs the records it changed, not a copy of the bucket. That query
	// reads them without the lock; everyone else with it.
	records map[string]record
}

// poolDelta is what a followed pool's next PoolChange tells: the leases
// upserted and the subnets removed since the previous Update, by subnet
// (the later change of a subnet wins), or a reset.
type poolDelta struct {
	reset    bool // tell the whole pool; the maps are unused
	upserted map[netip.Prefix]Lease
	removed  map[netip.Prefix]bool
}

// record is one pair of a bucket's last answer: its ModifyIndex, and its
// lease if it is one (a valid record at its canonical key).
type record struct {
	index uint64
	lease Lease
	ok    bool
}

// NewWatch returns a watch of no pool; SetPools says which to follow. A
// nil log discards.
func (r *Registry) NewWatch(log *slog.Logger) *Watch {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Watch{
		r: r, log: log, budget: watchBudget, target: watchTarget,
		coalesce: 20 * time.Millisecond, settle: time.Second,
		retry: 500 * time.Millisecond, retryMax: 2 * time.Second,
		ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1),
		changed: map[netip.Prefix]*poolDelta{},
	}
}

// SetPools sets the pools to follow. The buckets of all of them are
// planned again (the query budget is shared by capacity): a bucket whose
// prefix stays keeps its query and records; a new one starts from what
// the old buckets it splits or merges knew, so the plan changing wakes no
// one for leases that did not. A removed pool's queries stop, its leases
// go, and it is reported in the next Update's Changed (a Reset with no
// lease); a new pool is reported whole (a Reset) once all its buckets
// answered. It returns the generation of the pools now followed
// (Update.Gen).
func (w *Watch) SetPools(pools []netip.Prefix) uint64 {
	pools = slices.Clone(pools)
	for i, p := range pools {
		pools[i] = p.Masked()
	}
	slices.SortFunc(pools, func(a, b netip.Prefix) int { return strings.Compare(ipnet.Key(a), ipnet.Key(b)) })
	pools = slices.Compact(pools)
	w.mu.Lock()
	same, gen, wasShared := slices.Equal(pools, w.set), w.gen, len(w.set) > w.budget
	w.mu.Unlock()
	if same {
		return gen // the Manager says it again and again: no planning
	}
	var plan [][]string
	if n := len(pools); n > w.budget {
		// Shared: no buckets to plan (planning every pool at each Attach
		// made an Attach cost in proportion to the networks there), and
		// said once, when the pools outgrow the budget.
		if !wasShared {
			w.log.Warn("lease watch: more pools than its query budget; one query on every lease serves them all", "pools", n, "budget", w.budget)
		}
	} else {
		plan = planBuckets(pools, w.budget, w.target)
		queries := 0
		for _, b := range plan {
			queries += len(b)
		}
		w.log.Debug("lease watch: pools planned", "pools", len(pools), "queries", queries)
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.gen
	}
	w.gen++
	if len(pools) > w.budget {
		w.shareLocked(pools)
		return w.gen
	}
	old := map[netip.Prefix]*watchedPool{}
	for _, wp := range w.pools {
		old[wp.pool] = wp
	}
	next := make([]*watchedPool, 0, len(pools))
	var start []*bucket
	for i, p := range pools {
		wp := old[p]
		delete(old, p)
		if wp == nil {
			wp = &watchedPool{pool: p, key: w.r.poolLeasesPrefix(p)}
			w.resetLocked(p) // told once all its buckets answered
		}
		byPrefix := map[string]*bucket{}
		for _, b := range wp.buckets {
			byPrefix[b.prefix] = b
		}
		buckets := make([]*bucket, 0, len(plan[i]))
		for _, s := range plan[i] {
			prefix := wp.key + s
			if b := byPrefix[prefix]; b != nil {
				delete(byPrefix, prefix)
				buckets = append(buckets, b)
				continue
			}
			b := inherit(prefix, p, wp.buckets)
			buckets = append(buckets, b)
			start = append(start, b)
		}
		for _, b := range byPrefix {
			w.stopLocked(b)
		}
		wp.buckets = buckets
		next = append(next, wp)
	}
	for _, wp := range old {
		for _, b := range wp.buckets {
			w.stopLocked(b)
		}
		w.resetLocked(wp.pool) // told as a pool with no lease
	}
	w.pools = next
	w.set = pools
	for _, b := range start {
		ctx, cancel := context.WithCancel(w.ctx)
		b.cancel = cancel
		w.wg.Add(1)
		go w.follow(ctx, b)
	}
	if len(old) > 0 {
		w.signal()
	}
	return w.gen
}

// shareLocked follows pools, more than the budget of queries, with one
// query on every lease (the layout before the watch was sharded), shared by
// all of them: a query each would pass Consul's limit of connections per
// client address (200 by default), and the queries past it would be
// refused, their pools never read. The shared bucket starts from what the
// old buckets knew, as inherit does, so the change of plan empties no pool.
func (w *Watch) shareLocked(pools []netip.Prefix) {
	prefix := w.r.leasesPrefix()
	var shared *bucket
	var olds []*bucket
	for _, wp := range w.pools {
		for _, b := range wp.buckets {
			if b.prefix == prefix {
				shared = b
			} else if !slices.Contains(olds, b) {
				olds = append(olds, b)
			}
		}
	}
	var start bool
	if shared == nil {
		start = true
		shared = &bucket{prefix: prefix, records: map[string]record{}, answered: len(olds) > 0}
		for _, o := range olds {
			shared.answered = shared.answered && o.answered
			maps.Copy(shared.records, o.records)
		}
		if !shared.answered {
			clear(shared.records)
		}
	}
	for _, o := range olds {
		w.stopLocked(o)
	}
	old := map[netip.Prefix]bool{}
	for _, wp := range w.pools {
		old[wp.pool] = true
	}
	next := make([]*watchedPool, 0, len(pools))
	added := false
	for _, p := range pools {
		if !old[p] && !start {
			// A pool the running shared query already holds: its leases
			// are known now (or at its first answer, which resets every
			// pool), and no later answer may concern it (an answer marks
			// only the pools whose records changed). A new shared query
			// resets every pool at its first answer.
			w.resetLocked(p)
			added = true
		}
		delete(old, p)
		next = append(next, &watchedPool{pool: p, key: w.r.poolLeasesPrefix(p), buckets: []*bucket{shared}})
	}
	for p := range old {
		w.resetLocked(p)
	}
	w.pools, w.set = next, pools
	if start {
		ctx, cancel := context.WithCancel(w.ctx)
		shared.cancel = cancel
		w.wg.Add(1)
		go w.follow(ctx, shared)
	}
	if len(old) > 0 || added {
		w.signal()
	}
}

// inherit makes the bucket for prefix from the records of the old buckets
// of its pool: those it splits (an old prefix is a prefix of it) or merges
// (it is a prefix of theirs). They partitioned the pool's keys, so if they
// all had answered, the new bucket knows its keys as they did, and its
// first answer is compared with them like any other.
func inherit(prefix string, pool netip.Prefix, olds []*bucket) *bucket {
	b := &bucket{prefix: prefix, pool: pool, records: map[string]record{}}
	var overlapping []*bucket
	for _, o := range olds {
		if strings.HasPrefix(prefix, o.prefix) || strings.HasPrefix(o.prefix, prefix) {
			overlapping = append(overlapping, o)
		}
	}
	b.answered = len(overlapping) > 0
	for _, o := range overlapping {
		b.answered = b.answered && o.answered
		for k, rec := range o.records {
			if strings.HasPrefix(k, prefix) {
				b.records[k] = rec
			}
		}
	}
	if !b.answered {
		clear(b.records)
	}
	return b
}

// resetLocked has the next Update tell p whole (or, no longer followed,
// as empty), dropping the changes gathered for it.
func (w *Watch) resetLocked(p netip.Prefix) {
	w.changed[p] = &poolDelta{reset: true}
}

// deltaLocked is what the next Update tells of p, gathered so far.
func (w *Watch) deltaLocked(p netip.Prefix) *poolDelta {
	d := w.changed[p]
	if d == nil {
		d = &poolDelta{upserted: map[netip.Prefix]Lease{}, removed: map[netip.Prefix]bool{}}
		w.changed[p] = d
	}
	return d
}

func (w *Watch) stopLocked(b *bucket) {
	b.stopped = true
	if b.cancel != nil {
		b.cancel()
	}
}

// signal wakes Next, if it waits.
func (w *Watch) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// follow runs b's blocking query until ctx ends.
func (w *Watch) follow(ctx context.Context, b *bucket) {
	defer w.wg.Done()
	st := followState{first: true}
	backoff := time.Duration(0) // not 0: in a failure streak
	defer func() {
		if backoff != 0 { // stopped while failing: its streak ends, unlogged
			w.mu.Lock()
			w.failing--
			w.mu.Unlock()
		}
	}()
	for {
		pairs, idx, err := w.r.store.Wait(ctx, b.prefix, st.after)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if backoff == 0 {
				w.streak(b, err, true)
				backoff = w.retry
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, w.retryMax)
			continue
		}
		if backoff != 0 {
			w.streak(b, nil, false)
			backoff = 0
		}
		if !w.take(b, &st, pairs, idx) {
			return
		}
	}
}

// followState is what a bucket's query loop carries from one answer to the
// next.
type followState struct {
	after uint64 // the index to wait from
	first bool   // no answer taken yet
}

// recordChange is one record of a bucket that an answer changed: its key,
// what it was (had: it was there) and what it is (has: it still is).
type recordChange struct {
	key      string
	old, new record
	had, has bool
}

// take records one answer of b's query: the records whose ModifyIndex is
// not the one known are decoded, and their leases' changes are gathered
// for the next Update (per pool, by subnet). It costs the answer's records
// compared by index and the changed ones decoded; the bucket's records are
// changed in place. It returns false when b was stopped meanwhile.
func (w *Watch) take(b *bucket, st *followState, pairs []kv.Pair, idx uint64) bool {
	// The store's index went backwards (Consul restored from a snapshot):
	// an index is no longer proof that a record is the one known, so
	// every record is decoded, and the bucket's pools are read afresh
	// (reset): what was known of them is not to be trusted either.
	backwards := idx < st.after
	st.after = max(idx, 1) // 0 would answer at once, again and again
	first := st.first
	st.first = false
	known := b.records // only this query writes them: read without the lock
	var changes []recordChange
	seen := 0
	for _, p := range pairs {
		old, had := known[p.Key]
		if had {
			seen++
			if !backwards && old.index == p.ModifyIndex {
				continue
			}
		}
		changes = append(changes, recordChange{key: p.Key, old: old, had: had, new: w.decodeRecord(b, p), has: true})
	}
	if seen < len(known) { // some records went: find which (rare: O(bucket))
		inAnswer := make(map[string]bool, len(pairs))
		for _, p := range pairs {
			inAnswer[p.Key] = true
		}
		for k, old := range known {
			if !inAnswer[k] {
				changes = append(changes, recordChange{key: k, old: old, had: true})
			}
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if b.stopped {
		return false
	}
	for _, c := range changes {
		if c.has {
			b.records[c.key] = c.new
		} else {
			delete(b.records, c.key)
		}
	}
	shared := !b.pool.IsValid()
	switch {
	case backwards || !b.answered || first && shared:
		// Read afresh, or a first answer with nothing known before it
		// (what it inherited at a change of plan, if anything, was
		// incomplete), or a new shared query's first answer: a pool
		// added at that change of plan may have no record, so no change
		// would ever name it. Every pool of the bucket is told whole.
		b.answered = true
		if shared {
			for _, wp := range w.pools {
				w.resetLocked(wp.pool)
			}
		} else {
			w.resetLocked(b.pool)
		}
		w.signal()
	case len(changes) > 0:
		if w.gatherLocked(changes) {
			w.signal()
		}
	}
	return true
}

// gatherLocked adds the lease changes of changed records to what the next
// Update tells of their pools, if followed (the shared query reads every
// pool's); it reports whether some followed pool's leases changed. A
// record that is no lease, before or after, changes no lease.
func (w *Watch) gatherLocked(changes []recordChange) bool {
	told := false
	for _, c := range changes {
		switch {
		case c.has && c.new.ok:
			if w.poolLocked(c.new.lease.Pool) == nil {
				continue
			}
			told = true
			d := w.deltaLocked(c.new.lease.Pool)
			if !d.reset {
				delete(d.removed, c.new.lease.Subnet)
				d.upserted[c.new.lease.Subnet] = c.new.lease
			}
		case c.had && c.old.ok:
			if w.poolLocked(c.old.lease.Pool) == nil {
				continue
			}
			told = true
			d := w.deltaLocked(c.old.lease.Pool)
			if !d.reset {
				delete(d.upserted, c.old.lease.Subnet)
				d.removed[c.old.lease.Subnet] = true
			}
		}
	}
	return told
}

// streak logs a bucket's failure streak starting (on) or ending: once for
// the watch, not once per bucket, as they fail together when the store is
// unreachable.
func (w *Watch) streak(b *bucket, err error, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if on {
		w.failing++
		if w.failing == 1 {
			w.log.Warn("lease watch: reading leases failed; retrying, routes stay as they are", "prefix", b.prefix, "err", err)
		}
		return
	}
	w.failing--
	if w.failing == 0 {
		w.log.Info("lease watch: reading leases again")
	}
}

// decodeRecord reads one pair of b's answer.
func (w *Watch) decodeRecord(b *bucket, p kv.Pair) record {
	w.decodes.Add(1)
	rec := record{index: p.ModifyIndex}
	rec.lease, rec.ok = w.r.decodeAt(p.Key, b.pool, p.Value)
	rec.lease.index = p.ModifyIndex
	return rec
}

// decodeAt reads the lease recorded at key, if it is one: a record that
// parses, of a subnet of pool, at the key leaseKey gives it. A record at
// any other key is not a lease (it could claim a subnet leased already).
// The zero pool (the shared query of shareLocked) takes a lease of any pool.
func (r *Registry) decodeAt(key string, pool netip.Prefix, value []byte) (Lease, bool) {
	var l Lease
	if err := json.Unmarshal(value, &l); err != nil {
		return Lease{}, false
	}
	if (pool.IsValid() && l.Pool != pool) || !r.atOwnKey(key, l) {
		return Lease{}, false
	}
	return l, true
}

// atOwnKey reports whether l is a well-formed lease (a masked subnet inside
// its pool) recorded at the key leaseKey gives it. A record anywhere else is
// not a lease: it could claim a subnet another key leases already, which
// the one compare-and-set per subnet key exists to prevent.
func (r *Registry) atOwnKey(key string, l Lease) bool {
	return l.Subnet.IsValid() && l.Pool.IsValid() && l.Subnet == l.Subnet.Masked() &&
		l.Subnet.Bits() >= l.Pool.Bits() && l.Pool.Contains(l.Subnet.Addr()) && key == r.leaseKey(l.Pool, l.Subnet)
}

func (w *Watch) poolLocked(p netip.Prefix) *watchedPool {
	for _, wp := range w.pools {
		if wp.pool == p {
			return wp
		}
	}
	return nil
}

// Next blocks until a followed pool's leases may have changed since the
// previous Next returned (the first call answers once something has been
// read), or ctx ends. It waits a moment after a first change so that a
// burst (every bucket's first answer, a host's leases in several buckets)
// makes one Update, and, while some bucket has not answered yet, up to
// a second for all of them. Store failures are retried inside the watch;
// Next returns an error only for ctx or a closed watch.
func (w *Watch) Next(ctx context.Context) (Update, error) {
	var first time.Time // when a change to report was first seen
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return Update{}, ErrWatchClosed
		}
		var wait time.Duration
		if w.reportableLocked() {
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			complete := w.completeLocked()
			wait = first.Add(w.coalesce).Sub(now)
			if !complete {
				wait = first.Add(w.settle).Sub(now)
			}
			if wait <= 0 {
				u := w.updateLocked(complete)
				w.mu.Unlock()
				return u, nil
			}
			timer.Reset(wait)
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return Update{}, ctx.Err()
		case <-w.ctx.Done():
		case <-w.wake:
		case <-timer.C:
		}
	}
}

// reportableLocked: some pool changed that an Update can tell of, one
// whose buckets have all answered or one no longer followed. A pool whose
// buckets have not all answered waits for them (its leases would be
// partial), and does not keep Next returning meanwhile.
func (w *Watch) reportableLocked() bool {
	for p := range w.changed {
		if wp := w.poolLocked(p); wp == nil || w.answeredLocked(wp) {
			return true
		}
	}
	return false
}

func (w *Watch) completeLocked() bool {
	for _, wp := range w.pools {
		for _, b := range wp.buckets {
			if !b.answered {
				return false
			}
		}
	}
	return true
}

// updateLocked makes the Update and forgets what changed: for each pool
// that changed, its gathered changes (O(changes)), or, reset, its leases
// listed from its buckets' records. Past the budget every pool has the one
// shared bucket: it is walked once for all the pools reset together (its
// first answer resets every pool), not once per pool (O(pools × leases)).
func (w *Watch) updateLocked(complete bool) Update {
	u := Update{Complete: complete, Gen: w.gen, Changes: map[netip.Prefix]PoolChange{}}
	var resets []*watchedPool
	for p, d := range w.changed {
		wp := w.poolLocked(p)
		switch {
		case wp == nil: // no longer followed
			u.Changes[p] = PoolChange{Reset: true}
		case !w.answeredLocked(wp):
			continue // told once whole
		case d.reset:
			resets = append(resets, wp)
		default:
			c := PoolChange{Upserted: make([]Lease, 0, len(d.upserted)), Removed: make([]netip.Prefix, 0, len(d.removed))}
			for _, l := range d.upserted {
				c.Upserted = append(c.Upserted, l)
			}
			for s := range d.removed {
				c.Removed = append(c.Removed, s)
			}
			sortLeases(c.Upserted)
			slices.SortFunc(c.Removed, func(a, b netip.Prefix) int { return strings.Compare(ipnet.Key(a), ipnet.Key(b)) })
			u.Changes[p] = c
		}
	}
	maps.Copy(u.Changes, w.listLocked(resets))
	for p := range u.Changes {
		u.Changed = append(u.Changed, p)
		delete(w.changed, p)
	}
	slices.SortFunc(u.Changed, func(a, b netip.Prefix) int { return strings.Compare(ipnet.Key(a), ipnet.Key(b)) })
	return u
}

// listLocked lists the leases of pools from their buckets' records, as
// Resets, each walked once (the shared one for all its pools).
func (w *Watch) listLocked(pools []*watchedPool) map[netip.Prefix]PoolChange {
	type keyed struct {
		key   string
		lease Lease
	}
	lists := make(map[netip.Prefix][]keyed, len(pools))
	for _, wp := range pools {
		n := 0
		for _, b := range wp.buckets {
			if b.pool.IsValid() { // the shared bucket's records are of every pool: not counted
				n += len(b.records)
			}
		}
		lists[wp.pool] = make([]keyed, 0, n)
	}
	walked := map[*bucket]bool{}
	for _, wp := range pools {
		for _, b := range wp.buckets {
			if walked[b] {
				continue
			}
			walked[b] = true
			for k, rec := range b.records {
				if _, ok := lists[rec.lease.Pool]; rec.ok && ok {
					lists[rec.lease.Pool] = append(lists[rec.lease.Pool], keyed{k, rec.lease})
				}
			}
		}
	}
	out := make(map[netip.Prefix]PoolChange, len(pools))
	for p, ks := range lists {
		slices.SortFunc(ks, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
		ls := make([]Lease, len(ks))
		for i, k := range ks {
			ls[i] = k.lease
		}
		out[p] = PoolChange{Reset: true, Upserted: ls}
	}
	return out
}

// sortLeases sorts one pool's leases by subnet key, as the store lists
// them (textual: 10.42.10.0/24 before 10.42.2.0/24).
func sortLeases(ls []Lease) {
	slices.SortFunc(ls, func(a, b Lease) int { return strings.Compare(ipnet.Key(a.Subnet), ipnet.Key(b.Subnet)) })
}

// answeredLocked: every bucket of wp has answered, so its leases are whole.
func (w *Watch) answeredLocked(wp *watchedPool) bool {
	for _, b := range wp.buckets {
		if !b.answered {
			return false
		}
	}
	return true
}

// Close stops every query and waits for them; Next then returns
// ErrWatchClosed.
func (w *Watch) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
}
