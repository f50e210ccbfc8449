package overlay_test

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// scriptedWatch is an overlay.LeaseWatch whose answers the test hands
// Next one by one, each made under the pools of a given SetPools call
// (lease.Update.Gen), as lease.Watch makes them: an answer Next has made
// may reach the Manager after a later SetPools.
type scriptedWatch struct {
	mu      sync.Mutex
	gen     uint64
	sets    [][]netip.Prefix
	updates chan lease.Update
}

func (w *scriptedWatch) SetPools(pools []netip.Prefix) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.sets) == 0 || !slices.Equal(w.sets[len(w.sets)-1], pools) {
		w.gen++
		w.sets = append(w.sets, slices.Clone(pools))
	}
	return w.gen
}

func (w *scriptedWatch) current() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen
}

func (w *scriptedWatch) Next(ctx context.Context) (lease.Update, error) {
	select {
	case <-ctx.Done():
		return lease.Update{}, ctx.Err()
	case u := <-w.updates:
		return u, nil
	}
}

// A network detached and another attached in its pool while the watch's
// answer of the pool, made before, is on its way: that answer must not
// make the pool known, since the watch follows the pool afresh and its
// next answers hold no leases of it until its first read. The Manager
// took it as known, and the next answer of another pool (without the
// pool's leases) had the new network synced with no peer at all: every
// route of the pool removed, and kept so while the store could not be
// read.
func TestStaleAnswerAfterDetachAttach(t *testing.T) {
	w := &scriptedWatch{updates: make(chan lease.Update)}
	b := newFakeBackend()
	src := newFakeLeases()
	m := overlay.WithoutKernelEvents(overlay.NewManager(overlay.ManagerConfig{Leases: src, Watch: w,
		HostID: unitHost, Backends: overlay.NewBackends(b), Resync: time.Hour,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(m.Close)
	const p, q = "10.200.0.0/16", "10.201.0.0/16"
	a, c := unitNetwork("net-a", p, "10.200.1.0/24"), unitNetwork("net-c", q, "10.201.1.0/24")
	lp, lq := unitLease("host-b", p, "10.200.2.0/24", time.Time{}), unitLease("host-b", q, "10.201.2.0/24", time.Time{})
	attachAndRun(t, m, a, c)
	send := func(u lease.Update) {
		t.Helper()
		select {
		case w.updates <- u:
		case <-time.After(10 * time.Second):
			t.Fatal("the Manager does not read the watch")
		}
	}
	send(lease.Update{Changes: changes(p, reset(lp), q, reset(lq)), Changed: prefixes(p, q), Complete: true, Gen: w.current()})
	waitPeers(t, b, a.ID, "10.200.2.0/24")
	waitPeers(t, b, c.ID, "10.201.2.0/24")

	stale := lease.Update{Changes: changes(p, reset(lp)), Changed: prefixes(p), Complete: true, Gen: w.current()}
	if err := m.Detach(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	nb := unitNetwork("net-b", p, "10.200.3.0/24")
	if err := m.Attach(context.Background(), nb); err != nil {
		t.Fatal(err)
	}
	send(stale)
	// q changes; p, followed afresh, has not been read yet.
	lq2 := unitLease("host-c", q, "10.201.4.0/24", time.Time{})
	send(lease.Update{Changes: changes(q, lease.PoolChange{Upserted: []lease.Lease{lq2}}), Changed: prefixes(q), Complete: false, Gen: w.current()})
	waitPeers(t, b, c.ID, "10.201.2.0/24", "10.201.4.0/24")
	m.Kick()
	time.Sleep(300 * time.Millisecond)
	if _, syncs, peers := b.state(nb.ID); syncs > 0 && len(peers) == 0 {
		t.Fatalf("%s synced with no peer before its pool was read", nb.ID)
	}
	if m.InSync() {
		t.Fatal("InSync before the new network's pool was read")
	}
	send(lease.Update{Changes: changes(p, reset(lp)), Changed: prefixes(p), Complete: true, Gen: w.current()})
	waitPeers(t, b, nb.ID, "10.200.2.0/24")
	waitFor(t, "InSync", m.InSync)
}

func prefixes(ps ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// reset is a pool told whole: ls.
func reset(ls ...lease.Lease) lease.PoolChange { return lease.PoolChange{Reset: true, Upserted: ls} }

// changes are an Update's Changes: pools (strings) and their changes, in turn.
func changes(kv ...any) map[netip.Prefix]lease.PoolChange {
	out := map[netip.Prefix]lease.PoolChange{}
	for i := 0; i < len(kv); i += 2 {
		out[netip.MustParsePrefix(kv[i].(string))] = kv[i+1].(lease.PoolChange)
	}
	return out
}
