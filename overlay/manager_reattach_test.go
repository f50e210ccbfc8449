package overlay_test

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// A stress test: an answer of pool P applied between a
// Detach's removal of P's network and that Detach's followPools, with an
// Attach of another network of P in between too, has apply drop P's leases
// (P not attached at that moment) while P stays known and followed (the
// pools never changed, so no SetPools, no Reset). The new network is then
// synced with the peers told after only: none of those known before.
func TestDetachAttachKeepsLeases(t *testing.T) {
	const pool = deltaPool
	l2, l3 := unitLease("host-2", pool, "10.42.2.0/24", time.Time{}), unitLease("host-3", pool, "10.42.3.0/24", time.Time{})
	l4 := unitLease("host-4", pool, "10.42.4.0/24", time.Time{})
	for i := 0; i < 20000; i++ {
		w := &scriptedWatch{updates: make(chan lease.Update)}
		b := newDeltaBackend()
		m := overlay.WithoutKernelEvents(overlay.NewManager(overlay.ManagerConfig{Leases: newFakeLeases(), Watch: w,
			HostID: unitHost, Backends: overlay.NewBackends(b), Resync: time.Hour,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
		ctx, cancel := context.WithCancel(context.Background())
		n1 := unitNetwork("net-a", pool, "10.42.1.0/24")
		n2 := unitNetwork("net-b", pool, "10.42.1.0/24")
		if err := m.Attach(ctx, n1); err != nil {
			t.Fatal(err)
		}
		go m.Run(ctx)
		w.updates <- lease.Update{Changes: changes(pool, reset(l2, l3)), Changed: prefixes(pool), Complete: true, Gen: w.current()}
		for {
			if _, ls, _ := m.Snapshot(); len(ls) == 2 {
				break
			}
			runtime.Gosched()
		}
		sets := len(w.sets)
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { defer wg.Done(); _ = m.Detach(ctx, n1) }()
		go func() {
			defer wg.Done()
			w.updates <- lease.Update{Changes: changes(pool, lease.PoolChange{Upserted: []lease.Lease{l4}}), Changed: prefixes(pool), Complete: true, Gen: w.current()}
		}()
		go func() {
			defer wg.Done()
			runtime.Gosched()
			_ = m.Attach(ctx, n2)
		}()
		wg.Wait()
		w.mu.Lock()
		unchanged := len(w.sets) == sets // P followed throughout: no Reset is coming
		w.mu.Unlock()
		_, ls, _ := m.Snapshot()
		if unchanged && len(ls) < 2 {
			// net-b, attached, is synced as its pool is known: with no peer.
			deadline := time.Now().Add(5 * time.Second)
			_, syncs, peers := b.state(n2.ID)
			for syncs == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				_, syncs, peers = b.state(n2.ID)
			}
			cancel()
			m.Close()
			t.Fatalf("iteration %d: pool %s followed throughout, but the Manager holds %v of its leases (l2, l3 dropped); %s synced %d times, with peers %v",
				i, pool, subnets(ls), n2.ID, syncs, subnets(peers))
		}
		cancel()
		m.Close()
	}
}
