package overlay_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/overlay"
)

// fakeObserver adds up what the Manager reports.
type fakeObserver struct {
	mu                    sync.Mutex
	reconciles, failed    int
	networks              int   // reconciled, summed over the passes
	passes                []int // networks of each pass
	added, removed, calls int
}

func (o *fakeObserver) Reconciled(_ time.Duration, networks, failed int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reconciles++
	o.failed += failed
	o.networks += networks
	o.passes = append(o.passes, networks)
}

// reconciledNetworks is how many networks the passes reconciled so far,
// and in how many passes.
func (o *fakeObserver) reconciledNetworks() (networks, passes int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.networks, o.reconciles
}

func (o *fakeObserver) PeersChanged(added, removed int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.added += added
	o.removed += removed
	o.calls++
}

func (o *fakeObserver) get() (reconciles, failed, added, removed int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reconciles, o.failed, o.added, o.removed
}

// The Observer hears every reconcile and the peers each sync added and
// removed; InSync is true with nothing attached, false from an Attach
// until a reconcile from the leases succeeds, and false while one fails.
func TestObserverAndInSync(t *testing.T) {
	src := newFakeLeases(
		unitLease(unitHost, "10.42.0.0/16", "10.42.1.0/24", time.Time{}),
		unitLease("host-b", "10.42.0.0/16", "10.42.2.0/24", time.Time{}),
	)
	b := newFakeBackend()
	obs := &fakeObserver{}
	m := overlay.NewManager(overlay.ManagerConfig{Leases: src, Watch: src.watch(), HostID: unitHost, Backends: overlay.NewBackends(b),
		Resync: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Observer: obs})
	t.Cleanup(m.Close)
	if !m.InSync() {
		t.Fatal("InSync false with no network attached")
	}
	n := unitNetwork("net-a", "10.42.0.0/16", "10.42.1.0/24")
	if err := m.Attach(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	if m.InSync() {
		t.Fatal("InSync true right after Attach, before any reconcile")
	}
	go m.Run(context.Background())
	waitPeers(t, b, "net-a", "10.42.2.0/24")
	waitFor(t, "InSync after the reconcile", m.InSync)
	waitFor(t, "one peer added", func() bool { _, _, added, removed := obs.get(); return added == 1 && removed == 0 })
	nets, leases, known := m.Snapshot()
	if len(nets) != 1 || nets[0].ID != "net-a" || len(leases) != 2 || !known {
		t.Fatalf("Snapshot: %v, %d leases, known %v", nets, len(leases), known)
	}

	// host-b leaves and host-c comes: one added, one removed.
	src.set(
		unitLease(unitHost, "10.42.0.0/16", "10.42.1.0/24", time.Time{}),
		unitLease("host-c", "10.42.0.0/16", "10.42.3.0/24", time.Time{}),
	)
	waitPeers(t, b, "net-a", "10.42.3.0/24")
	waitFor(t, "host-c added, host-b removed", func() bool { _, _, added, removed := obs.get(); return added == 2 && removed == 1 })

	// A network whose setup fails (the fake refuses an empty ID) keeps the
	// Manager out of sync, and each reconcile reports it failed.
	_ = m.Attach(context.Background(), unitNetwork("", "10.44.0.0/16", "10.44.1.0/24"))
	waitFor(t, "a failed reconcile reported", func() bool { _, failed, _, _ := obs.get(); return failed > 0 })
	if m.InSync() {
		t.Fatal("InSync true while a network fails to reconcile")
	}
	if r, _, _, _ := obs.get(); r < 3 {
		t.Fatalf("%d reconciles reported; want every one", r)
	}
}
