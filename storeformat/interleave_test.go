package storeformat

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
)

// hooked is a store that runs hook once, right after the first read of the
// format record that finds one: the moment a felt has decided from that
// record which step to run, but has not run it yet.
type hooked struct {
	kv.Store
	key  string
	hook func()
	done bool
}

func (h *hooked) Get(ctx context.Context, key string) (kv.Pair, error) {
	p, err := h.Store.Get(ctx, key)
	if key == h.key && err == nil && !h.done {
		h.done = true
		h.hook()
	}
	return p, err
}

// TestSlowFeltDoesNotRerunAnOldStep: felt B reads format 1, and before it
// runs step 1, felt A runs the whole migration to format 3. B must not then
// run step 1 on format-3 data: a step is idempotent on its own format's
// data, not on a later format's ("x+1+2" would become "x+1+2+1"). This is
// the interleaving that made TestConsul/ConcurrentFelts fail now and then.
func TestSlowFeltDoesNotRerunAnOldStep(t *testing.T) {
	s := openStore(t)
	prefix := "p/"
	put(t, s, prefix+Key, `{"version":1}`)
	put(t, s, prefix+"data/a", "x")
	var calls atomic.Int32
	f := Format{Version: 3, Steps: []Step{rename(1, &calls), rename(2, &calls)}}
	slow := &hooked{Store: s, key: prefix + Key, hook: func() {
		if _, err := area(s, prefix, f).Ensure(ctx(t)); err != nil {
			t.Errorf("felt A: %v", err)
		}
	}}
	if rec, err := area(slow, prefix, f).Ensure(ctx(t)); err != nil || rec.Version != 3 {
		t.Fatalf("felt B: Ensure = %+v, %v; want format 3", rec, err)
	}
	if v := get(t, s, prefix+"data/a"); v != "x+1+2" || calls.Load() != 2 {
		t.Fatalf("data %q after %d step runs; want x+1+2, each step run once", v, calls.Load())
	}
}

// waitHooked is a store that closes waiting when a felt first blocks in Wait.
type waitHooked struct {
	kv.Store
	waiting chan struct{}
	once    sync.Once
}

func (w *waitHooked) Wait(ctx context.Context, prefix string, index uint64) ([]kv.Pair, uint64, error) {
	w.once.Do(func() { close(w.waiting) })
	return w.Store.Wait(ctx, prefix, index)
}

func claimed(t *testing.T, version int, since time.Time) string {
	t.Helper()
	b, err := json.Marshal(Record{Version: version, Writer: "felt other", Migrating: &Claim{To: version + 1, By: "felt other 0123", Since: since}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestWaitsForAnotherFeltsClaim: a felt that finds another felt migrating
// runs no step; it waits for the record to change, then reads it again.
func TestWaitsForAnotherFeltsClaim(t *testing.T) {
	s := openStore(t)
	prefix := "p/"
	put(t, s, prefix+Key, claimed(t, 1, time.Now()))
	put(t, s, prefix+"data/a", "x")
	var calls atomic.Int32
	w := &waitHooked{Store: s, waiting: make(chan struct{})}
	type result struct {
		rec Record
		err error
	}
	done := make(chan result, 1)
	go func() {
		rec, err := area(w, prefix, Format{Version: 2, Steps: []Step{rename(1, &calls)}}).Ensure(ctx(t))
		done <- result{rec, err}
	}()
	select {
	case <-w.waiting:
	case r := <-done:
		t.Fatalf("Ensure = %+v, %v without waiting for the other felt's claim", r.rec, r.err)
	}
	// The other felt finishes its step and records it.
	put(t, s, prefix+"data/a", "x+1")
	put(t, s, prefix+Key, `{"version":2,"writer":"felt other"}`)
	if r := <-done; r.err != nil || r.rec.Version != 2 {
		t.Fatalf("Ensure = %+v, %v; want format 2", r.rec, r.err)
	}
	if v := get(t, s, prefix+"data/a"); v != "x+1" || calls.Load() != 0 {
		t.Fatalf("data %q after %d step runs; want x+1, the step left to the felt that claimed it", v, calls.Load())
	}
}

// TestTakesOverExpiredClaim: a claim older than ClaimTimeout is a crashed
// felt's; the next felt takes it over and runs the step (again: steps are
// idempotent), instead of waiting forever.
func TestTakesOverExpiredClaim(t *testing.T) {
	s := openStore(t)
	prefix := "p/"
	put(t, s, prefix+Key, claimed(t, 1, time.Now().Add(-2*DefaultClaimTimeout)))
	put(t, s, prefix+"data/a", "x")
	var calls atomic.Int32
	rec, err := area(s, prefix, Format{Version: 2, Steps: []Step{rename(1, &calls)}}).Ensure(ctx(t))
	if err != nil || rec != (Record{Version: 2, Writer: "felt test"}) {
		t.Fatalf("Ensure = %+v, %v; want format 2 by felt test", rec, err)
	}
	if v := get(t, s, prefix+"data/a"); v != "x+1" || calls.Load() != 1 {
		t.Fatalf("data %q after %d step runs; want x+1 after one", v, calls.Load())
	}

	// A short ClaimTimeout: the waiting felt takes over once it passes.
	prefix = "short/"
	put(t, s, prefix+Key, claimed(t, 1, time.Now()))
	put(t, s, prefix+"data/a", "x")
	a := area(s, prefix, Format{Version: 2, Steps: []Step{rename(1, nil)}})
	a.ClaimTimeout = 200 * time.Millisecond
	if rec, err := a.Ensure(ctx(t)); err != nil || rec.Version != 2 || get(t, s, prefix+"data/a") != "x+1" {
		t.Fatalf("Ensure = %+v, %v, data %q; want format 2 and x+1 after the claim expired", rec, err, get(t, s, prefix+"data/a"))
	}
}

// TestFailedStepReleasesClaim: a felt whose step fails leaves the record at
// the format it reached, unclaimed, so the next felt need not wait.
func TestFailedStepReleasesClaim(t *testing.T) {
	s := openStore(t)
	prefix := "p/"
	put(t, s, prefix+Key, `{"version":1}`)
	put(t, s, prefix+"data/a", "x")
	broken := Step{Name: "broken", Migrate: func(context.Context, kv.Store, string) error { return errors.New("disk on fire") }}
	if _, err := area(s, prefix, Format{Version: 2, Steps: []Step{broken}}).Ensure(ctx(t)); err == nil {
		t.Fatal("Ensure succeeded with a broken step")
	}
	if got, _ := record(t, s, prefix); got.Version != 1 || got.Migrating != nil {
		t.Fatalf("record %+v after the step failed; want format 1, unclaimed", got)
	}
}

// TestClaimByNewerFeltRefused: a newer felt migrating the area past this
// felt's format is a newer format already; this felt must not write in it.
func TestClaimByNewerFeltRefused(t *testing.T) {
	s := openStore(t)
	put(t, s, "p/"+Key, claimed(t, 1, time.Now()))
	_, err := area(s, "p/", Local()).Ensure(ctx(t))
	var tooNew *TooNewError
	if !errors.As(err, &tooNew) || tooNew.Found.Version != 2 {
		t.Fatalf("Ensure error = %v; want a TooNewError for format 2", err)
	}
}

// openStore returns an empty embedded store, closed when the test ends.
func openStore(t *testing.T) kv.Store {
	t.Helper()
	s, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
