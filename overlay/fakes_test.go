package overlay_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// fakeLeases is an overlay.LeaseSource in memory: the shared store as the
// Manager sees it, for unit tests that need no root, no namespace and no
// store. Its clock is time.Now shifted by offset, so that the Manager's
// real timers and the leases' expiry agree while a test can still judge
// expiry by a clock of its own.
type fakeLeases struct {
	mu      sync.Mutex
	leases  []lease.Lease
	index   uint64        // bumped by every change
	changed chan struct{} // closed (and replaced) by every change
	offset  time.Duration
	failing error // while set, reads fail with it
	reads   int   // reads that failed
	removed []lease.Lease
}

var (
	_ overlay.LeaseSource = (*fakeLeases)(nil)
	_ overlay.LeaseSource = (*lease.Registry)(nil) // the real one
	_ overlay.LeaseWatch  = (*testWatch)(nil)
)

func newFakeLeases(ls ...lease.Lease) *fakeLeases {
	return &fakeLeases{leases: ls, index: 1, changed: make(chan struct{})}
}

// set replaces the leases, as peers acquiring and releasing would.
func (f *fakeLeases) set(ls ...lease.Lease) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leases = slices.Clone(ls)
	f.bump()
}

// fail makes reads (Leases, and so a watch's) fail with err from now on
// (nil: work again); a watch waiting is woken to see it.
func (f *fakeLeases) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = err
	close(f.changed)
	f.changed = make(chan struct{})
}

// failedReads is how many reads failed so far.
func (f *fakeLeases) failedReads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// removedLeases is what RemoveExpired removed so far.
func (f *fakeLeases) removedLeases() []lease.Lease {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.removed)
}

func (f *fakeLeases) bump() {
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeLeases) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Add(f.offset)
}

func (f *fakeLeases) Leases(_ context.Context, pool netip.Prefix) ([]lease.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing != nil {
		f.reads++
		return nil, f.failing
	}
	var out []lease.Lease
	for _, l := range f.leases {
		if l.Pool == pool {
			out = append(out, l)
		}
	}
	return out, nil
}

// wait blocks until the leases (or failing) may have changed since
// index, and returns the index to wait from next; 0 answers at once.
func (f *fakeLeases) wait(ctx context.Context, index uint64) (uint64, error) {
	f.mu.Lock()
	if index == 0 || index != f.index {
		defer f.mu.Unlock()
		return f.index, nil
	}
	changed := f.changed
	f.mu.Unlock()
	select {
	case <-changed:
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.index, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// watch returns a LeaseWatch over f.
func (f *fakeLeases) watch() *testWatch {
	return newTestWatch(f.Leases, f.wait)
}

// sameLease is == on leases, whose backend data is bytes.
func sameLease(a, b lease.Lease) bool {
	return a.Pool == b.Pool && a.Subnet == b.Subnet && a.HostID == b.HostID && a.PublicIP == b.PublicIP &&
		a.Expiry.Equal(b.Expiry) && bytes.Equal(a.BackendData, b.BackendData)
}

// RemoveExpired removes the given leases that are expired by the source's
// clock and still held unchanged.
func (f *fakeLeases) RemoveExpired(_ context.Context, ls []lease.Lease) int {
	now := f.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, l := range ls {
		if !l.Expired(now) {
			continue
		}
		if i := slices.IndexFunc(f.leases, func(x lease.Lease) bool { return sameLease(x, l) }); i >= 0 {
			f.leases = slices.Delete(f.leases, i, i+1)
			f.removed = append(f.removed, l)
			n++
		}
	}
	if n > 0 {
		f.bump()
	}
	return n
}

// testWatch is an overlay.LeaseWatch over a lease source, as lease.Watch
// is over the store: it reads each followed pool whole once the source may
// have changed (wait: a blocking query, answering with the index to wait
// from next), and answers with the pools whose leases differ from its
// previous answer, lease by lease, and pools it answers for the first time,
// whole (a Reset). A read that
// fails is retried every 50 ms, inside, as lease.Watch retries the store:
// Next does not answer meanwhile.
type testWatch struct {
	read func(context.Context, netip.Prefix) ([]lease.Lease, error)
	wait func(ctx context.Context, index uint64) (uint64, error)

	mu       sync.Mutex
	pools    []netip.Prefix
	reported map[netip.Prefix]map[netip.Prefix]lease.Lease // each pool's leases as last answered, by subnet
	index    uint64                                        // to wait from; 0: read at once
	repoll   chan struct{}                                 // closed (and replaced) by SetPools
	answered int                                           // Next's answers
	gen      uint64                                        // SetPools calls that changed the pools
}

func newTestWatch(read func(context.Context, netip.Prefix) ([]lease.Lease, error),
	wait func(context.Context, uint64) (uint64, error)) *testWatch {
	return &testWatch{read: read, wait: wait, reported: map[netip.Prefix]map[netip.Prefix]lease.Lease{}, repoll: make(chan struct{})}
}

func (w *testWatch) SetPools(pools []netip.Prefix) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if slices.Equal(pools, w.pools) {
		return w.gen
	}
	w.gen++
	w.pools = slices.Clone(pools)
	for p := range w.reported {
		if !slices.Contains(pools, p) {
			delete(w.reported, p) // followed again, it is new again
		}
	}
	w.index = 0 // read the pools now followed at once
	close(w.repoll)
	w.repoll = make(chan struct{})
	return w.gen
}

// followed is the pools of the last SetPools.
func (w *testWatch) followed() []netip.Prefix {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.pools)
}

func (w *testWatch) Next(ctx context.Context) (lease.Update, error) {
	for {
		w.mu.Lock()
		index, repoll := w.index, w.repoll
		w.mu.Unlock()
		wctx, cancel := waitCtx(ctx, repoll)
		next, err := w.wait(wctx, index)
		cancel()
		if ctx.Err() != nil {
			return lease.Update{}, ctx.Err()
		}
		w.mu.Lock()
		pools := slices.Clone(w.pools)
		if err == nil && w.index == index { // else SetPools meanwhile: read again at once
			w.index = next
		}
		w.mu.Unlock()
		now := map[netip.Prefix][]lease.Lease{}
		for _, p := range pools {
			ls, err := w.read(ctx, p)
			if err != nil {
				now = nil
				break
			}
			now[p] = ls
		}
		if now == nil { // the store failed: retry, inside
			w.mu.Lock()
			w.index = 0
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return lease.Update{}, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		w.mu.Lock()
		if !slices.Equal(pools, w.pools) {
			w.mu.Unlock()
			continue // SetPools meanwhile: read what is followed now
		}
		var changed []netip.Prefix
		changes := map[netip.Prefix]lease.PoolChange{}
		for _, p := range pools {
			old, ok := w.reported[p]
			c := leaseChange(old, now[p])
			if !ok {
				c = lease.PoolChange{Reset: true, Upserted: now[p]}
			} else if len(c.Upserted)+len(c.Removed) == 0 {
				continue
			}
			changed = append(changed, p)
			changes[p] = c
			w.reported[p] = map[netip.Prefix]lease.Lease{}
			for _, l := range now[p] {
				w.reported[p][l.Subnet] = l
			}
		}
		if len(changed) > 0 || w.answered == 0 {
			w.answered++
			w.mu.Unlock()
			return lease.Update{Changes: changes, Changed: changed, Complete: true, Gen: w.gen}, nil
		}
		w.mu.Unlock()
	}
}

// answers is how many times Next answered.
func (w *testWatch) answers() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.answered
}

// waitCtx is ctx, also ended when stop closes; cancel releases it.
func waitCtx(ctx context.Context, stop <-chan struct{}) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-stop:
			cancel()
		case <-wctx.Done():
		}
	}()
	return wctx, cancel
}

// leaseChange is how a pool's leases went from old (by subnet) to now,
// lease by lease: any field changed is a rewritten record.
func leaseChange(old map[netip.Prefix]lease.Lease, now []lease.Lease) lease.PoolChange {
	var c lease.PoolChange
	seen := map[netip.Prefix]bool{}
	for _, l := range now {
		seen[l.Subnet] = true
		if o, ok := old[l.Subnet]; !ok || !sameLease(o, l) {
			c.Upserted = append(c.Upserted, l)
		}
	}
	for s := range old {
		if !seen[s] {
			c.Removed = append(c.Removed, s)
		}
	}
	return c
}

// fakeBackend is an overlay.Backend that touches no kernel: it records, per
// network ID, the Setups, the Syncs with their peers, and the Teardowns.
type fakeBackend struct {
	mu       sync.Mutex
	setups   map[string]int
	syncs    map[string]int
	peers    map[string][]lease.Lease // of the last Sync
	torndown map[string]bool
	failing  map[string]error // Syncs of these networks fail
}

var _ overlay.Backend = (*fakeBackend)(nil)

func newFakeBackend() *fakeBackend {
	return &fakeBackend{setups: map[string]int{}, syncs: map[string]int{}, peers: map[string][]lease.Lease{}, torndown: map[string]bool{},
		failing: map[string]error{}}
}

// failSync makes network id's Syncs fail with err from now on (nil: work).
func (b *fakeBackend) failSync(id string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		delete(b.failing, id)
		return
	}
	b.failing[id] = err
}

// counts are the Setups and Syncs of every network.
func (b *fakeBackend) counts() (setups, syncs map[string]int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.setups), maps.Clone(b.syncs)
}

// It describes itself as a backend without options, data or checks.
func (b *fakeBackend) Name() string                      { return fakeBackendName }
func (b *fakeBackend) Overhead() int                     { return 0 }
func (b *fakeBackend) Options() overlay.Options          { return overlay.Options{} }
func (b *fakeBackend) LeaseData(netip.Prefix) any        { return nil }
func (b *fakeBackend) DeviceName(overlay.Network) string { return "" }
func (b *fakeBackend) Check(context.Context, overlay.Network, func(context.Context) ([]lease.Lease, error)) error {
	return nil
}

func (b *fakeBackend) Setup(_ context.Context, n overlay.Network) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n.ID == "" {
		return errors.New("network without ID")
	}
	b.setups[n.ID]++
	return nil
}

func (b *fakeBackend) Sync(_ context.Context, n overlay.Network, peers []lease.Lease) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.syncs[n.ID]++
	if err := b.failing[n.ID]; err != nil {
		return err
	}
	b.peers[n.ID] = slices.Clone(peers)
	return nil
}

func (b *fakeBackend) Teardown(_ context.Context, n overlay.Network) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.torndown[n.ID] = true
	return nil
}

// state returns n's Setup and Sync counts and the peers of its last Sync.
func (b *fakeBackend) state(id string) (setups, syncs int, peers []lease.Lease) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.setups[id], b.syncs[id], slices.Clone(b.peers[id])
}

// tornDown says whether network id was torn down.
func (b *fakeBackend) tornDown(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.torndown[id]
}
