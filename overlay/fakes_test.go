package overlay_test

import (
	"bytes"
	"context"
	"errors"
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
	failing error // while set, WatchLeases fails with it
	watches int   // WatchLeases calls that failed
	removed []lease.Lease
}

var (
	_ overlay.LeaseSource = (*fakeLeases)(nil)
	_ overlay.LeaseSource = (*lease.Registry)(nil) // the real one
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

// fail makes WatchLeases fail with err from now on (nil: work again); a
// watch waiting is woken to see it.
func (f *fakeLeases) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = err
	close(f.changed)
	f.changed = make(chan struct{})
}

// failedWatches is how many WatchLeases calls failed so far.
func (f *fakeLeases) failedWatches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watches
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

func (f *fakeLeases) AllLeases(context.Context) ([]lease.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.leases), nil
}

func (f *fakeLeases) Leases(_ context.Context, pool netip.Prefix) ([]lease.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []lease.Lease
	for _, l := range f.leases {
		if l.Pool == pool {
			out = append(out, l)
		}
	}
	return out, nil
}

// WatchLeases answers as lease.Registry's does: at once for index 0 or a
// stale index, else when the leases change; and fails while failing is set.
func (f *fakeLeases) WatchLeases(ctx context.Context, after uint64) ([]lease.Lease, uint64, error) {
	for {
		f.mu.Lock()
		if f.failing != nil {
			err := f.failing
			f.watches++
			f.mu.Unlock()
			return nil, 0, err
		}
		if after == 0 || after != f.index {
			ls, index := slices.Clone(f.leases), f.index
			f.mu.Unlock()
			return ls, index, nil
		}
		changed := f.changed
		f.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
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

// fakeBackend is an overlay.Backend that touches no kernel: it records, per
// network ID, the Setups, the Syncs with their peers, and the Teardowns.
type fakeBackend struct {
	mu       sync.Mutex
	setups   map[string]int
	syncs    map[string]int
	peers    map[string][]lease.Lease // of the last Sync
	torndown map[string]bool
}

var _ overlay.Backend = (*fakeBackend)(nil)

func newFakeBackend() *fakeBackend {
	return &fakeBackend{setups: map[string]int{}, syncs: map[string]int{}, peers: map[string][]lease.Lease{}, torndown: map[string]bool{}}
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
