package overlay_test

// Tests of the Manager taking the watch's per-record changes
// (lease.PoolChange): each change reaches the backend as what it changed,
// a pool told whole again (a Reset) as its difference, and leases that
// expire with no change in the store are dropped on time, the expired
// ones alone handed to RemoveExpired.

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

// removalSource is a fakeLeases that records what RemoveExpired is given.
type removalSource struct {
	*fakeLeases
	mu    sync.Mutex
	given [][]lease.Lease
}

func (s *removalSource) RemoveExpired(ctx context.Context, ls []lease.Lease) int {
	s.mu.Lock()
	s.given = append(s.given, slices.Clone(ls))
	s.mu.Unlock()
	return s.fakeLeases.RemoveExpired(ctx, ls)
}

func (s *removalSource) calls() [][]lease.Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.given)
}

// changesBed is a Manager over a scripted watch and a deltaBackend, with
// one network (net-a, deltaPool, this host's 10.42.1.0/24), running.
type changesBed struct {
	w   *scriptedWatch
	b   *deltaBackend
	src *removalSource
	m   *overlay.Manager
	n   overlay.Network
}

func newChangesBed(t *testing.T) *changesBed {
	t.Helper()
	c := &changesBed{w: &scriptedWatch{updates: make(chan lease.Update)}, b: newDeltaBackend(),
		src: &removalSource{fakeLeases: newFakeLeases()}, n: unitNetwork("net-a", deltaPool, "10.42.1.0/24")}
	c.m = overlay.WithoutKernelEvents(overlay.NewManager(overlay.ManagerConfig{Leases: c.src, Watch: c.w,
		HostID: unitHost, Backends: overlay.NewBackends(c.b), Resync: time.Hour,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(c.m.Close)
	attachAndRun(t, c.m, c.n)
	return c
}

// tell hands the Manager the change of deltaPool c.
func (c *changesBed) tell(t *testing.T, pc lease.PoolChange) {
	t.Helper()
	u := lease.Update{Changes: changes(deltaPool, pc), Changed: prefixes(deltaPool), Complete: true, Gen: c.w.current()}
	select {
	case c.w.updates <- u:
	case <-time.After(10 * time.Second):
		t.Fatal("the Manager does not read the watch")
	}
}

// wantDelta waits for SyncPeers call number i and checks it.
func (c *changesBed) wantDelta(t *testing.T, i int, changed, removed []string) {
	t.Helper()
	waitFor(t, "a SyncPeers call", func() bool { return len(c.b.calls()) > i })
	got := c.b.calls()[i]
	slices.Sort(changed)
	if !slices.Equal(got.changed, changed) || !slices.Equal(got.removed, removed) {
		t.Fatalf("SyncPeers %d: changed %v, removed %v; want %v, %v", i, got.changed, got.removed, changed, removed)
	}
}

func TestChangesReachTheBackendAsTold(t *testing.T) {
	c := newChangesBed(t)
	l2, l3 := unitLease("host-2", deltaPool, "10.42.2.0/24", time.Time{}), unitLease("host-3", deltaPool, "10.42.3.0/24", time.Time{})
	own := unitLease(unitHost, deltaPool, "10.42.1.0/24", time.Time{})
	c.tell(t, reset(own, l2, l3))
	waitPeers(t, c.b.fakeBackend, c.n.ID, "10.42.2.0/24", "10.42.3.0/24")

	l4 := unitLease("host-4", deltaPool, "10.42.4.0/24", time.Time{})
	c.tell(t, lease.PoolChange{Upserted: []lease.Lease{l4}})
	c.wantDelta(t, 0, []string{"10.42.4.0/24"}, nil)
	c.tell(t, lease.PoolChange{Removed: prefixes("10.42.2.0/24")})
	c.wantDelta(t, 1, nil, []string{"10.42.2.0/24"})
	moved := l3
	moved.PublicIP = netip.MustParseAddr("192.0.2.33")
	renewed := l4
	renewed.Expiry = time.Now().Add(time.Hour) // a renewal: no peer change
	c.tell(t, lease.PoolChange{Upserted: []lease.Lease{moved, renewed}})
	c.wantDelta(t, 2, []string{"10.42.3.0/24"}, nil)

	// Read afresh (a Reset): 10.42.4.0 is gone, 10.42.5.0 came, the rest
	// is as known: one delta of the difference, no full Sync.
	l5 := unitLease("host-5", deltaPool, "10.42.5.0/24", time.Time{})
	c.tell(t, reset(own, moved, l5))
	c.wantDelta(t, 3, []string{"10.42.5.0/24"}, []string{"10.42.4.0/24"})
	if n := c.b.fullSyncs(c.n.ID); n != 1 {
		t.Fatalf("%d full Syncs; want the first only", n)
	}
	// Snapshot holds the pool as told.
	_, ls, known := c.m.Snapshot()
	if got := subnets(ls); !known || !slices.Equal(got, []string{"10.42.1.0/24", "10.42.3.0/24", "10.42.5.0/24"}) {
		t.Fatalf("Snapshot: leases %v, known %v", got, known)
	}
	// Kick's full Sync holds every peer as changed since.
	c.m.Kick()
	waitFor(t, "a full Sync after Kick", func() bool { return c.b.fullSyncs(c.n.ID) == 2 })
	waitPeers(t, c.b.fakeBackend, c.n.ID, "10.42.3.0/24", "10.42.5.0/24")
}

// A lease that expires with no change in the store (its host died) is
// dropped when it expires, by the expiry timer; one renewed before its
// expiry (told as upserted) is not; only the expired one is handed to
// RemoveExpired.
func TestExpiryWithoutStoreChange(t *testing.T) {
	c := newChangesBed(t)
	dies := time.Now().Add(700 * time.Millisecond)
	dead := unitLease("host-d", deltaPool, "10.42.2.0/24", dies)
	lives := unitLease("host-l", deltaPool, "10.42.3.0/24", dies)
	forever := unitLease("host-f", deltaPool, "10.42.4.0/24", time.Time{})
	c.tell(t, reset(dead, lives, forever))
	waitPeers(t, c.b.fakeBackend, c.n.ID, "10.42.2.0/24", "10.42.3.0/24", "10.42.4.0/24")
	renewed := lives
	renewed.Expiry = time.Now().Add(time.Hour)
	c.tell(t, lease.PoolChange{Upserted: []lease.Lease{renewed}})
	if time.Now().After(dies) {
		t.Skip("the leases expired before the test could renew one (slow machine)")
	}
	c.wantDelta(t, 0, nil, []string{"10.42.2.0/24"})
	time.Sleep(300 * time.Millisecond)
	if calls := c.b.calls(); len(calls) != 1 {
		t.Fatalf("SyncPeers calls %v; want the expiry's alone", calls)
	}
	waitFor(t, "RemoveExpired called", func() bool { return len(c.src.calls()) > 0 })
	for _, given := range c.src.calls() {
		if got := subnets(given); !slices.Equal(got, []string{"10.42.2.0/24"}) {
			t.Fatalf("RemoveExpired given %v; want the expired lease alone", got)
		}
	}
	// The store removes it: told, it is no longer one to remove.
	c.tell(t, lease.PoolChange{Removed: prefixes("10.42.2.0/24")})
	waitFor(t, "the removal taken in", func() bool {
		_, ls, _ := c.m.Snapshot()
		return len(ls) == 2
	})
	time.Sleep(100 * time.Millisecond) // a removal under way before it ends
	n := len(c.src.calls())
	c.m.Kick()
	waitFor(t, "a full Sync after Kick", func() bool { return c.b.fullSyncs(c.n.ID) == 2 })
	time.Sleep(100 * time.Millisecond)
	if got := len(c.src.calls()); got != n {
		t.Fatalf("RemoveExpired called %d more times after the lease went", got-n)
	}
}

// PeersVersion moves with every lease change, expiry, Attach and Detach,
// and stays while nothing changes: the prober's targets are rebuilt by it.
func TestPeersVersion(t *testing.T) {
	d := newDeltaBed(t, 3)
	v0 := d.m.PeersVersion()
	time.Sleep(50 * time.Millisecond)
	if v := d.m.PeersVersion(); v != v0 {
		t.Fatalf("version moved from %d to %d with nothing changing", v0, v)
	}
	short := unitLease("host-short", deltaPool, "10.42.9.0/28", d.src.Now().Add(3*time.Second)) // live while renewed below, even on a loaded machine
	d.set(append(slices.Clone(d.leases), short)...)
	d.waitPeers(t)
	v1 := d.m.PeersVersion()
	if v1 == v0 {
		t.Fatal("a lease added did not move the version")
	}
	// A renewal (only the expiry moved) changes no peer.
	renewed := short
	renewed.Expiry = short.Expiry.Add(500 * time.Millisecond)
	d.set(append(slices.Clone(d.leases[:len(d.leases)-1]), renewed)...)
	waitFor(t, "the renewal to be known", func() bool {
		_, ls, _ := d.m.Snapshot()
		return slices.ContainsFunc(ls, func(l lease.Lease) bool { return l.Subnet == renewed.Subnet && l.Expiry.Equal(renewed.Expiry) })
	})
	if v := d.m.PeersVersion(); v != v1 {
		t.Fatalf("a renewal moved the version from %d to %d", v1, v)
	}
	waitFor(t, "the short lease's expiry to move the version", func() bool { return d.m.PeersVersion() != v1 })
	v2 := d.m.PeersVersion()
	other := unitNetwork("net-b", "10.43.0.0/16", "10.43.1.0/24")
	if err := d.m.Attach(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	v3 := d.m.PeersVersion()
	if v3 == v2 {
		t.Fatal("an Attach did not move the version")
	}
	if err := d.m.Detach(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if d.m.PeersVersion() == v3 {
		t.Fatal("a Detach did not move the version")
	}
}
