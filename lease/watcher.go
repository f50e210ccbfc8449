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

// Update is what a lease watch (Watch, watcher.go) answers: the current
// leases of the pools it follows and which of them changed.
type Update struct {
	// Leases are the current leases (expired ones included) of every
	// followed pool that has answered at least once (all its buckets), in
	// store key order (pools by key, then subnets by key: textual, so
	// 10.42.10.0/24 comes before 10.42.2.0/24), as AllLeases lists them.
	Leases []Lease
	// Changed are the followed pools whose leases (any record: added,
	// removed, rewritten) changed since the previous Update, and pools
	// whose first answer this is. A pool SetPools stopped following since
	// the previous Update is in Changed too, with no leases left: it is no
	// longer watched, and what was known of it is dropped.
	Changed []netip.Prefix
	// Complete: every followed pool has answered at least once, so a
	// lease missing from Leases is really gone.
	Complete bool
	// Gen is the generation of the followed pools the Update was made
	// under: what the SetPools call that set them returned. An Update made
	// before a SetPools may be read after it; a pool that call followed
	// afresh is told of by a later Update only (Gen at least the call's).
	Gen uint64
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
	pools   []*watchedPool // followed, sorted by key
	set     []netip.Prefix // their prefixes, as SetPools had them last
	changed map[netip.Prefix]bool
	failing int    // buckets in a failure streak
	gen     uint64 // SetPools calls that changed the pools

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
	records  map[string]record // by key: what the last answer held
	leases   []Lease           // the valid ones, by key
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
		changed: map[netip.Prefix]bool{},
	}
}

// SetPools sets the pools to follow. The buckets of all of them are
// planned again (the query budget is shared by capacity): a bucket whose
// prefix stays keeps its query and records; a new one starts from what
// the old buckets it splits or merges knew, so the plan changing wakes no
// one for leases that did not. A removed pool's queries stop, its leases
// go, and it is reported in the next Update's Changed. It returns the
// generation of the pools now followed (Update.Gen).
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
		w.changed[wp.pool] = true
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
		shared.leases = validLeases(shared.records)
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
		if !old[p] && shared.answered && !start {
			// A pool the running shared query already holds: its leases
			// are known now, and no later answer may concern it (an
			// answer marks only the pools whose records changed). A new
			// shared query marks every pool at its first answer.
			w.changed[p] = true
			added = true
		}
		delete(old, p)
		next = append(next, &watchedPool{pool: p, key: w.r.poolLeasesPrefix(p), buckets: []*bucket{shared}})
	}
	for p := range old {
		w.changed[p] = true
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
	b.leases = validLeases(b.records)
	return b
}

// validLeases are the leases of records, in key order.
func validLeases(records map[string]record) []Lease {
	keys := make([]string, 0, len(records))
	for k, rec := range records {
		if rec.ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([]Lease, len(keys))
	for i, k := range keys {
		out[i] = records[k].lease
	}
	return out
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
	w.mu.Lock()
	st := followState{known: b.records, first: true} // the bucket's records are only replaced, never changed
	w.mu.Unlock()
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
	known map[string]record // the records of the last answer
	after uint64            // the index to wait from
	first bool              // no answer taken yet
}

// take records one answer of b's query; false: b was stopped meanwhile.
func (w *Watch) take(b *bucket, st *followState, pairs []kv.Pair, idx uint64) bool {
	known := st.known
	backwards := idx < st.after
	if backwards {
		// The store's index went backwards (Consul restored from a
		// snapshot): an index is no longer proof that a record is the
		// one known, so this answer is read afresh, and reported: it
		// is compared with nothing, so an empty one would look
		// unchanged and leave the gone leases in place.
		known = nil
	}
	st.after = max(idx, 1) // 0 would answer at once, again and again
	records, changed := w.decode(b, pairs, known)
	changed = changed || backwards
	var pools map[netip.Prefix]bool // the shared query's pools that changed; nil: all
	if changed && !backwards && !b.pool.IsValid() {
		pools = changedPools(known, records)
	}
	st.known = records
	first := st.first
	st.first = false
	w.mu.Lock()
	defer w.mu.Unlock()
	if b.stopped {
		return false
	}
	// A new shared query's first answer marks every pool it serves,
	// even unchanged from the records it inherited at the change of
	// plan: a pool added then may have no record yet, so no change
	// would ever name it. (A pool's own bucket, inherited by a new
	// plan, covers the same pool as before: nothing to mark.)
	shared := !b.pool.IsValid()
	if changed || !b.answered || first && shared {
		b.records = records
		b.leases = validLeases(records)
		b.answered = true
		switch {
		case b.pool.IsValid():
			w.changed[b.pool] = true
		case pools != nil && !first: // the shared query: the pools whose leases changed
			for _, wp := range w.pools {
				if pools[wp.pool] {
					w.changed[wp.pool] = true
				}
			}
		default: // its first answer, or after data loss: any pool may have changed
			for _, wp := range w.pools {
				w.changed[wp.pool] = true
			}
		}
		w.signal()
	}
	return true
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

// decode turns a bucket's answer into its records, decoding only the pairs
// whose ModifyIndex is not the one known, and says whether anything
// differs from known.
func (w *Watch) decode(b *bucket, pairs []kv.Pair, known map[string]record) (map[string]record, bool) {
	records := make(map[string]record, len(pairs))
	changed := len(pairs) != len(known)
	for _, p := range pairs {
		if rec, ok := known[p.Key]; ok && rec.index == p.ModifyIndex {
			records[p.Key] = rec
			continue
		}
		changed = true
		w.decodes.Add(1)
		rec := record{index: p.ModifyIndex}
		rec.lease, rec.ok = w.r.decodeAt(p.Key, b.pool, p.Value)
		rec.lease.index = p.ModifyIndex
		records[p.Key] = rec
	}
	return records, changed
}

// changedPools are the pools whose leases differ between two answers of
// the shared query (by record index): past the budget, one lease written
// marks its own pool, not every followed pool, so the Manager looks at the
// peers of one network, not of all. A record that is no lease before or
// after changes no pool's leases.
func changedPools(before, after map[string]record) map[netip.Prefix]bool {
	pools := map[netip.Prefix]bool{}
	mark := func(r record) {
		if r.ok {
			pools[r.lease.Pool] = true
		}
	}
	for k, r := range after {
		if old, ok := before[k]; !ok || old.index != r.index {
			mark(r)
			mark(old)
		}
	}
	for k, old := range before {
		if _, ok := after[k]; !ok {
			mark(old)
		}
	}
	return pools
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

// updateLocked makes the Update and forgets what changed. Each bucket
// keeps its leases as a list, rebuilt when it changes: the Update copies
// them, decoding nothing.
func (w *Watch) updateLocked(complete bool) Update {
	u := Update{Complete: complete, Gen: w.gen}
	// Past the budget every pool has the one shared bucket: it is counted
	// and walked once, keeping the answered pools' leases (walking it for
	// each pool, and sizing the answer as if each pool held all of it,
	// cost O(pools × leases) per answer: 300 networks on one host spent
	// most of felt's CPU here).
	counted := map[*bucket]bool{}
	n := 0
	for _, wp := range w.pools {
		for _, b := range wp.buckets {
			if !counted[b] {
				counted[b] = true
				n += len(b.leases)
			}
		}
	}
	u.Leases = make([]Lease, 0, n)
	var shared *bucket
	sharedPools := map[netip.Prefix]bool{}
	for _, wp := range w.pools {
		if w.answeredLocked(wp) {
			for _, b := range wp.buckets {
				if b.pool.IsValid() {
					u.Leases = append(u.Leases, b.leases...)
					continue
				}
				shared = b // the shared query holds every pool's
				sharedPools[wp.pool] = true
			}
		}
	}
	if shared != nil {
		for _, l := range shared.leases {
			if sharedPools[l.Pool] {
				u.Leases = append(u.Leases, l)
			}
		}
	}
	for p := range w.changed {
		if wp := w.poolLocked(p); wp == nil || w.answeredLocked(wp) {
			u.Changed = append(u.Changed, p)
		}
	}
	slices.SortFunc(u.Changed, func(a, b netip.Prefix) int { return strings.Compare(ipnet.Key(a), ipnet.Key(b)) })
	for _, p := range u.Changed {
		delete(w.changed, p)
	}
	return u
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
