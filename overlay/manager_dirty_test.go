package overlay_test

// Tests of which networks a pass reconciles (dirty.go): only those a
// change concerns, with many networks attached. The Manager here follows
// no kernel events (overlay.WithoutKernelEvents): the machine's namespace
// is shared with other tests, and its events would add reconciles. Each
// test waits for the Manager to be quiet before it counts.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// manyNetworks is how many networks the tests attach: enough that a pass
// of every network cannot pass for one of a few.
const manyNetworks = 40

// numbered is network i of the tests: alone in pool 10.(100+i).0.0/16,
// holding its .1 subnet; peerLease is host's lease of the pool's subnet
// sub, expiring at expiry (zero: never).
func numbered(i int) overlay.Network {
	return unitNetwork(fmt.Sprintf("net-%02d", i), poolOf(i), fmt.Sprintf("10.%d.1.0/24", 100+i))
}

func poolOf(i int) string { return fmt.Sprintf("10.%d.0.0/16", 100+i) }

func peerLease(i int, host string, sub int, expiry time.Time) lease.Lease {
	return unitLease(host, poolOf(i), fmt.Sprintf("10.%d.%d.0/24", 100+i, sub), expiry)
}

// dirtyBed is a Manager over a fake store, backend and observer, with
// networks 0..count-1 attached, each with one peer (host-b's .2), all
// synced and the Manager quiet.
type dirtyBed struct {
	src    *fakeLeases
	watch  *testWatch
	b      *fakeBackend
	obs    *fakeObserver
	m      *overlay.Manager
	leases []lease.Lease
}

func newDirtyBed(t *testing.T, count int, resync time.Duration) *dirtyBed {
	t.Helper()
	d := &dirtyBed{b: newFakeBackend(), obs: &fakeObserver{}}
	for i := range count {
		d.leases = append(d.leases, peerLease(i, "host-b", 2, time.Time{}))
	}
	d.src = newFakeLeases(d.leases...)
	d.watch = d.src.watch()
	d.m = overlay.WithoutKernelEvents(overlay.NewManager(overlay.ManagerConfig{Leases: d.src, Watch: d.watch,
		HostID: unitHost, Backends: overlay.NewBackends(d.b), Resync: resync,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Observer: d.obs}))
	t.Cleanup(d.m.Close)
	var nets []overlay.Network
	for i := range count {
		nets = append(nets, numbered(i))
	}
	attachAndRun(t, d.m, nets...)
	for i := range count {
		waitPeers(t, d.b, numbered(i).ID, fmt.Sprintf("10.%d.2.0/24", 100+i))
	}
	d.quiet(t)
	return d
}

// quiet waits until no pass has run and no Setup or Sync was made for
// 300 ms (a bound of 20 s against a Manager that never settles).
func (d *dirtyBed) quiet(t *testing.T) {
	t.Helper()
	type state struct {
		networks, passes int
		setups, syncs    map[string]int
	}
	read := func() state {
		var s state
		s.networks, s.passes = d.obs.reconciledNetworks()
		s.setups, s.syncs = d.b.counts()
		return s
	}
	same := func(x, y state) bool {
		return x.networks == y.networks && x.passes == y.passes && maps.Equal(x.setups, y.setups) && maps.Equal(x.syncs, y.syncs)
	}
	last := read()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		now := read()
		if same(now, last) {
			return
		}
		last = now
	}
	t.Fatal("the Manager never became quiet")
}

// set replaces the store's leases.
func (d *dirtyBed) set(ls ...lease.Lease) {
	d.leases = ls
	d.src.set(ls...)
}

// counted runs change, waits for done and for the Manager to be quiet,
// and returns how many networks the passes reconciled meanwhile, and the
// networks whose Setups or Syncs changed.
func (d *dirtyBed) counted(t *testing.T, change func(), done func() bool) (reconciled int, touched []string) {
	t.Helper()
	before, _ := d.obs.reconciledNetworks()
	setups, syncs := d.b.counts()
	change()
	waitFor(t, "the change to be reconciled", done)
	d.quiet(t)
	after, _ := d.obs.reconciledNetworks()
	setups2, syncs2 := d.b.counts()
	for id := range setups2 {
		if setups2[id] != setups[id] || syncs2[id] != syncs[id] {
			touched = append(touched, id)
		}
	}
	return after - before, touched
}

// synced says whether network id's Syncs went past n.
func (d *dirtyBed) syncedPast(id string, n int) func() bool {
	return func() bool { _, syncs, _ := d.b.state(id); return syncs > n }
}

// An Attach reconciles its own network only: with 40 attached, the 41st
// costs one reconcile, not 41. (It cost one of every network before #14:
// CreateNetwork's CPU grew with the networks on the host.)
func TestAttachReconcilesItsNetworkOnly(t *testing.T) {
	d := newDirtyBed(t, manyNetworks, time.Hour)
	n := numbered(manyNetworks)
	reconciled, touched := d.counted(t, func() {
		d.set(append(d.leases, peerLease(manyNetworks, "host-b", 2, time.Time{}))...)
		if err := d.m.Attach(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}, d.syncedPast(n.ID, 0))
	t.Logf("networks reconciled for one Attach with %d attached: %d", manyNetworks, reconciled)
	if reconciled != 1 || len(touched) != 1 || touched[0] != n.ID {
		t.Fatalf("the Attach of %s reconciled %d networks, touched %v; want 1, itself", n.ID, reconciled, touched)
	}
	waitPeers(t, d.b, n.ID, fmt.Sprintf("10.%d.2.0/24", 100+manyNetworks))
	if got := d.watch.followed(); len(got) != manyNetworks+1 {
		t.Fatalf("the watch follows %d pools, want %d", len(got), manyNetworks+1)
	}
	if !d.m.InSync() {
		t.Fatal("not InSync after the Attach was reconciled")
	}
}

// A lease change in one pool reconciles that pool's network only.
func TestLeaseChangeReconcilesItsPoolOnly(t *testing.T) {
	d := newDirtyBed(t, manyNetworks, time.Hour)
	const i = 7
	id := numbered(i).ID
	_, syncs, _ := d.b.state(id)
	reconciled, touched := d.counted(t, func() {
		d.set(append(d.leases, peerLease(i, "host-c", 3, time.Time{}))...)
	}, d.syncedPast(id, syncs))
	if reconciled != 1 || len(touched) != 1 || touched[0] != id {
		t.Fatalf("a lease change in pool %s reconciled %d networks, touched %v; want 1, %s", poolOf(i), reconciled, touched, id)
	}
	waitPeers(t, d.b, id, fmt.Sprintf("10.%d.2.0/24", 100+i), fmt.Sprintf("10.%d.3.0/24", 100+i))
}

// A renewal moves a lease's expiry only: the watch answers (the record
// changed), and no network is reconciled, its peers being the same.
func TestRenewalReconcilesNothing(t *testing.T) {
	d := newDirtyBed(t, manyNetworks, time.Hour)
	const i = 3
	renewing := peerLease(i, "host-c", 3, time.Now().Add(time.Hour))
	d.set(append(d.leases, renewing)...)
	waitPeers(t, d.b, numbered(i).ID, fmt.Sprintf("10.%d.2.0/24", 100+i), fmt.Sprintf("10.%d.3.0/24", 100+i))
	d.quiet(t)
	answers := d.watch.answers()
	renewed := renewing
	renewed.Expiry = renewing.Expiry.Add(time.Minute)
	ls := append(d.leases[:len(d.leases)-1:len(d.leases)-1], renewed)
	reconciled, touched := d.counted(t, func() { d.set(ls...) },
		func() bool { return d.watch.answers() > answers })
	if reconciled != 0 || len(touched) != 0 {
		t.Fatalf("a renewal reconciled %d networks, touched %v; want none", reconciled, touched)
	}
}

// A lease that expires takes its peer away from its pool's network when
// it does (the expiry timer), and no other network is reconciled.
func TestExpiryReconcilesItsPoolOnly(t *testing.T) {
	d := newDirtyBed(t, manyNetworks, time.Hour)
	const i = 5
	id := numbered(i).ID
	dies := time.Now().Add(1500 * time.Millisecond)
	d.set(append(d.leases, peerLease(i, "host-c", 3, dies))...)
	waitPeers(t, d.b, id, fmt.Sprintf("10.%d.2.0/24", 100+i), fmt.Sprintf("10.%d.3.0/24", 100+i))
	d.quiet(t)
	if time.Now().After(dies) {
		t.Skip("the lease expired before it was synced (slow machine)")
	}
	_, syncs, _ := d.b.state(id)
	reconciled, touched := d.counted(t, func() {}, d.syncedPast(id, syncs))
	if reconciled != 1 || len(touched) != 1 || touched[0] != id {
		t.Fatalf("an expiry in pool %s reconciled %d networks, touched %v; want 1, %s", poolOf(i), reconciled, touched, id)
	}
	waitPeers(t, d.b, id, fmt.Sprintf("10.%d.2.0/24", 100+i))
}

// Detaching a network reconciles no other.
func TestDetachReconcilesNothing(t *testing.T) {
	d := newDirtyBed(t, manyNetworks, time.Hour)
	n := numbered(11)
	reconciled, touched := d.counted(t, func() {
		if err := d.m.Detach(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}, func() bool { return d.b.tornDown(n.ID) })
	if reconciled != 0 || len(touched) != 0 {
		t.Fatalf("a Detach reconciled %d networks, touched %v; want none", reconciled, touched)
	}
	if got := d.watch.followed(); len(got) != manyNetworks-1 {
		t.Fatalf("the watch follows %d pools after a Detach, want %d", len(got), manyNetworks-1)
	}
}

// A network whose Sync fails is retried alone, until it works; InSync is
// false meanwhile, also across passes of other networks that succeed, and
// true again once it reconciles.
func TestFailedNetworkRetriedAlone(t *testing.T) {
	d := newDirtyBed(t, 10, time.Hour)
	failing, other := numbered(3).ID, numbered(6)
	d.b.failSync(failing, errors.New("injected: route refused"))
	setups, syncs := d.b.counts()
	d.set(append(d.leases, peerLease(3, "host-c", 3, time.Time{}))...)
	waitFor(t, "two retries of "+failing, d.syncedPast(failing, syncs[failing]+2))
	if d.m.InSync() {
		t.Fatal("InSync while a network fails")
	}
	// A lease change of another network: its pass succeeds, InSync stays
	// false.
	d.set(append(d.leases, peerLease(6, "host-c", 3, time.Time{}))...)
	waitPeers(t, d.b, other.ID, "10.106.2.0/24", "10.106.3.0/24")
	if d.m.InSync() {
		t.Fatal("InSync after another network's pass, while one still fails")
	}
	setups2, syncs2 := d.b.counts()
	for id := range setups2 {
		if id != failing && id != other.ID && (setups2[id] != setups[id] || syncs2[id] != syncs[id]) {
			t.Errorf("%s reconciled while %s was retried: setups %d -> %d, syncs %d -> %d",
				id, failing, setups[id], setups2[id], syncs[id], syncs2[id])
		}
	}
	_, failed, _, _ := d.obs.get()
	if failed < 2 {
		t.Fatalf("%d failures reported; want one per retry", failed)
	}
	d.b.failSync(failing, nil)
	waitPeers(t, d.b, failing, "10.103.2.0/24", "10.103.3.0/24")
	waitFor(t, "InSync once the failed network reconciled", d.m.InSync)
	d.quiet(t) // the retries stop
}

// The resync tick reconciles every network, whatever changed.
func TestResyncReconcilesEveryNetwork(t *testing.T) {
	d := newDirtyBed(t, 10, 400*time.Millisecond)
	_, syncs := d.b.counts()
	for i := range 10 {
		id := numbered(i).ID
		waitFor(t, "a resync of "+id, d.syncedPast(id, syncs[id]))
	}
}

// Kick (the plugin's call when this host's address changed) reconciles
// every network at once: one pass of all of them.
func TestKickReconcilesEveryNetwork(t *testing.T) {
	d := newDirtyBed(t, manyNetworks, time.Hour)
	_, syncs := d.b.counts()
	reconciled, touched := d.counted(t, d.m.Kick, func() bool {
		_, now := d.b.counts()
		for id, n := range syncs {
			if now[id] == n {
				return false
			}
		}
		return true
	})
	if reconciled != manyNetworks || len(touched) != manyNetworks {
		t.Fatalf("a Kick reconciled %d networks, touched %d; want all %d", reconciled, len(touched), manyNetworks)
	}
}

// InSync holds across passes of some networks that succeed, as it did
// after the full one; it is false from an Attach until that network
// synced.
func TestInSyncAcrossPartialPasses(t *testing.T) {
	d := newDirtyBed(t, 5, time.Hour)
	if !d.m.InSync() {
		t.Fatal("not InSync after every network synced")
	}
	var outOfSync atomic.Bool
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				if !d.m.InSync() {
					outOfSync.Store(true)
				}
			}
		}
	}()
	for i := range 5 {
		d.set(append(d.leases, peerLease(i, "host-c", 3, time.Time{}))...)
		waitPeers(t, d.b, numbered(i).ID, fmt.Sprintf("10.%d.2.0/24", 100+i), fmt.Sprintf("10.%d.3.0/24", 100+i))
	}
	close(stop)
	<-sampled
	if outOfSync.Load() {
		t.Fatal("InSync went false during passes of single networks that succeeded")
	}

	// An Attach whose pool is not answered yet: out of sync until it is.
	n := numbered(9)
	if err := d.m.Attach(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	if d.m.InSync() {
		t.Fatal("InSync right after an Attach")
	}
	waitFor(t, "InSync once the new network synced", d.m.InSync)
	if _, syncs, _ := d.b.state(n.ID); syncs == 0 {
		t.Fatal("InSync before the attached network was synced")
	}
}
