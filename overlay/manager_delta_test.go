package overlay_test

// Tests of the incremental sync (delta.go): a lease change of a network
// synced before reaches a DeltaSyncer backend as the peers it changed; full
// Syncs stay for attach, Kick, failures and a backend's refusal. The kernel
// side is tested with the backends (overlay/vxlan, overlay/hostgw).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// deltaBackend is a fakeBackend that also takes deltas: it records each
// SyncPeers call and applies it to the peers the fake holds, so waitPeers
// sees the result of either kind of sync.
type deltaBackend struct {
	*fakeBackend
	dmu     sync.Mutex
	deltas  []deltaCall
	failing error // SyncPeers fails with it
	decline bool  // SyncPeers asks for a full Sync
}

type deltaCall struct {
	changed []string // subnets
	removed []string
}

var _ overlay.DeltaSyncer = (*deltaBackend)(nil)

func newDeltaBackend() *deltaBackend { return &deltaBackend{fakeBackend: newFakeBackend()} }

func (b *deltaBackend) SyncPeers(_ context.Context, n overlay.Network, changed []lease.Lease, removed []netip.Prefix) error {
	b.dmu.Lock()
	call := deltaCall{changed: subnets(changed)}
	for _, p := range removed {
		call.removed = append(call.removed, p.String())
	}
	slices.Sort(call.removed)
	b.deltas = append(b.deltas, call)
	failing, decline := b.failing, b.decline
	b.dmu.Unlock()
	if decline {
		return fmt.Errorf("device recreated: %w", overlay.ErrFullSyncNeeded)
	}
	if failing != nil {
		return failing
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	peers := slices.DeleteFunc(b.peers[n.ID], func(l lease.Lease) bool {
		return slices.Contains(removed, l.Subnet) || slices.ContainsFunc(changed, func(c lease.Lease) bool { return c.Subnet == l.Subnet })
	})
	b.peers[n.ID] = append(peers, changed...)
	return nil
}

func (b *deltaBackend) set(failing error, decline bool) {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	b.failing, b.decline = failing, decline
}

// calls are the SyncPeers calls so far.
func (b *deltaBackend) calls() []deltaCall {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	return slices.Clone(b.deltas)
}

func (b *deltaBackend) fullSyncs(id string) int {
	_, syncs, _ := b.state(id)
	return syncs
}

// deltaBed is a Manager over a deltaBackend with one network (net-a, pool
// 10.42.0.0/16, this host's 10.42.1.0/24) and peers peers, synced once.
type deltaBed struct {
	src    *fakeLeases
	b      *deltaBackend
	m      *overlay.Manager
	n      overlay.Network
	leases []lease.Lease
}

const deltaPool = "10.42.0.0/16"

func deltaPeer(i int) lease.Lease {
	return unitLease(fmt.Sprintf("host-%d", i), deltaPool, fmt.Sprintf("10.42.%d.%d/28", 2+i/16, i%16*16), time.Time{})
}

func newDeltaBed(t *testing.T, peers int) *deltaBed {
	t.Helper()
	d := &deltaBed{b: newDeltaBackend(), n: unitNetwork("net-a", deltaPool, "10.42.1.0/24")}
	for i := range peers {
		d.leases = append(d.leases, deltaPeer(i))
	}
	d.src = newFakeLeases(d.leases...)
	d.m = overlay.WithoutKernelEvents(newUnitManager(t, d.src, d.b, &syncBuffer{}))
	attachAndRun(t, d.m, d.n)
	d.waitPeers(t)
	waitFor(t, "the network in sync", d.m.InSync)
	return d
}

func (d *deltaBed) set(ls ...lease.Lease) {
	d.leases = ls
	d.src.set(ls...)
}

// waitPeers waits for the backend to hold d.leases as the network's peers.
func (d *deltaBed) waitPeers(t *testing.T) {
	t.Helper()
	want := subnets(d.leases)
	waitFor(t, fmt.Sprintf("the backend to hold %d peers", len(want)), func() bool {
		_, _, peers := d.b.state(d.n.ID)
		return slices.Equal(subnets(peers), want)
	})
}

// A lease change reaches the backend as the one peer it added, changed or
// removed, with no full Sync; a renewal reaches it not at all.
func TestLeaseChangeSyncsOnlyTheDelta(t *testing.T) {
	d := newDeltaBed(t, 200)
	full := d.b.fullSyncs(d.n.ID)
	if full != 1 || len(d.b.calls()) != 0 {
		t.Fatalf("after attach: %d full syncs and %d deltas, want 1 and 0", full, len(d.b.calls()))
	}
	expect := func(what string, before int, want deltaCall) {
		t.Helper()
		waitFor(t, "a SyncPeers call", func() bool { return len(d.b.calls()) > before })
		d.waitPeers(t)
		calls := d.b.calls()
		last := calls[len(calls)-1]
		if !slices.Equal(last.changed, want.changed) || !slices.Equal(last.removed, want.removed) {
			t.Fatalf("%s: SyncPeers(changed %v, removed %v), want (%v, %v)", what, last.changed, last.removed, want.changed, want.removed)
		}
		if got := d.b.fullSyncs(d.n.ID); got != full {
			t.Fatalf("%s: %d full syncs, want %d", what, got, full)
		}
	}

	added := deltaPeer(200)
	d.set(append(slices.Clone(d.leases), added)...)
	expect("a peer added", 0, deltaCall{changed: []string{added.Subnet.String()}})

	ls := slices.Clone(d.leases)
	ls[7].PublicIP = netip.MustParseAddr("192.0.2.77")
	d.set(ls...)
	expect("a peer moved", 1, deltaCall{changed: []string{ls[7].Subnet.String()}})

	gone := d.leases[3]
	d.set(slices.Delete(slices.Clone(d.leases), 3, 4)...)
	expect("a peer removed", 2, deltaCall{removed: []string{gone.Subnet.String()}})

	before := len(d.b.calls())
	ls = slices.Clone(d.leases)
	for i := range ls {
		ls[i].Expiry = time.Now().Add(time.Hour) // every lease renewed
	}
	d.set(ls...)
	time.Sleep(300 * time.Millisecond)
	if n := len(d.b.calls()); n != before {
		t.Fatalf("renewals made %d SyncPeers calls", n-before)
	}
	if got := d.b.fullSyncs(d.n.ID); got != full {
		t.Fatalf("renewals made %d full syncs", got-full)
	}
}

// A SyncPeers that fails leaves the kernel unknown: the retry is a full
// Sync with every peer, and the change after it a delta again.
func TestFailedDeltaLeadsToFullSync(t *testing.T) {
	d := newDeltaBed(t, 20)
	full := d.b.fullSyncs(d.n.ID)
	d.b.set(errors.New("netlink: no buffer space"), false)
	d.set(append(slices.Clone(d.leases), deltaPeer(20))...)
	waitFor(t, "a SyncPeers call", func() bool { return len(d.b.calls()) > 0 })
	d.b.set(nil, false)
	d.waitPeers(t)
	waitFor(t, "a full Sync", func() bool { return d.b.fullSyncs(d.n.ID) > full })
	deltas := len(d.b.calls())
	if deltas != 1 {
		t.Fatalf("%d SyncPeers calls, want the one that failed: the retry must be a full Sync", deltas)
	}
	waitFor(t, "the network in sync", d.m.InSync)
	full = d.b.fullSyncs(d.n.ID)
	d.set(append(slices.Clone(d.leases), deltaPeer(21))...)
	d.waitPeers(t)
	if got := len(d.b.calls()); got != deltas+1 {
		t.Fatalf("after the full Sync, a change made %d SyncPeers calls, want 1", got-deltas)
	}
	if got := d.b.fullSyncs(d.n.ID); got != full {
		t.Fatalf("after the full Sync, a change made %d full Syncs, want 0", got-full)
	}
}

// A backend that cannot vouch for the kernel (its device was recreated)
// declines the delta: a full Sync follows in the same pass, with no retry
// wait and no failure.
func TestDeclinedDeltaSyncsFully(t *testing.T) {
	d := newDeltaBed(t, 20)
	full := d.b.fullSyncs(d.n.ID)
	d.b.set(nil, true)
	d.set(append(slices.Clone(d.leases), deltaPeer(20))...)
	d.waitPeers(t)
	if got := d.b.fullSyncs(d.n.ID); got != full+1 {
		t.Fatalf("%d full syncs after a declined delta, want 1", got-full)
	}
	if !d.m.InSync() {
		t.Fatal("a declined delta followed by a full Sync left the network out of sync")
	}
}

// Kick and a new Attach of the network (its device set up again) sync
// every peer, not a delta.
func TestKickAndReattachSyncFully(t *testing.T) {
	d := newDeltaBed(t, 20)
	full := d.b.fullSyncs(d.n.ID)
	d.m.Kick()
	waitFor(t, "a full Sync after Kick", func() bool { return d.b.fullSyncs(d.n.ID) == full+1 })
	if err := d.m.Attach(context.Background(), d.n); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a full Sync after a new Attach", func() bool { return d.b.fullSyncs(d.n.ID) == full+2 })
	if n := len(d.b.calls()); n != 0 {
		t.Fatalf("%d SyncPeers calls, want none", n)
	}
	// And the resync of a pass of every network, as Kick's: ReconcileAll.
	if !d.m.ReconcileAll(context.Background()) {
		t.Fatal("ReconcileAll failed")
	}
	if got := d.b.fullSyncs(d.n.ID); got != full+3 {
		t.Fatalf("ReconcileAll made %d full syncs, want 1", got-full-2)
	}
}
