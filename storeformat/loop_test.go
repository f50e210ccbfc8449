package storeformat

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
)

// wiping is a store whose format record vanishes right after every write of
// it, as when someone wipes the store (or runs Registry.DeleteAll) over and
// over while a felt checks its format. gets counts Ensure's reads; past
// maxGets it fails them so that a looping Ensure ends the test instead of
// hanging it.
type wiping struct {
	kv.Store
	key  string
	gets int
}

const maxGets = 1000

func (w *wiping) Get(ctx context.Context, key string) (kv.Pair, error) {
	w.gets++
	if w.gets > maxGets {
		return kv.Pair{}, errors.New("too many reads: Ensure loops")
	}
	return w.Store.Get(ctx, key)
}

func (w *wiping) CAS(ctx context.Context, key string, value []byte, index uint64) error {
	if err := w.Store.CAS(ctx, key, value, index); err != nil {
		return err
	}
	if key == w.key {
		return w.Store.Delete(ctx, key)
	}
	return nil
}

// TestEnsureEndsWhenRecordKeepsVanishing: Ensure gives up with an error
// naming the record when the record it writes keeps disappearing, instead
// of writing it again forever (before, only compare-and-set conflicts were
// counted, and a record deleted after each write looped without end).
func TestEnsureEndsWhenRecordKeepsVanishing(t *testing.T) {
	s, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	prefix := "p/"
	put(t, s, prefix+"data/a", "x") // data without a record: format 1, to migrate
	w := &wiping{Store: s, key: prefix + Key}
	_, err = area(w, prefix, Format{Version: 2, Steps: []Step{rename(1, nil)}}).Ensure(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "kept changing") || !strings.Contains(err.Error(), prefix+Key) {
		t.Fatalf("Ensure = %v after %d reads; want it to give up: the record kept changing", err, w.gets)
	}
	if w.gets > 50 {
		t.Errorf("Ensure read the record %d times before giving up; want a small bound", w.gets)
	}
}

// TestEnsureNeverReturnsConflict: a step that meets a compare-and-set
// conflict (another felt migrating the same record) is run again, and
// Ensure's error never matches kv.ErrConflict, not even through Guard: the
// lease code reads that error as "my own key changed: read it again" (or,
// in Release, "already gone") and would loop or drop a write in silence.
func TestEnsureNeverReturnsConflict(t *testing.T) {
	s, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	put(t, s, "once/data/a", "x")
	calls := 0
	conflictOnce := Step{Name: "conflicts once", Migrate: func(ctx context.Context, s kv.Store, prefix string) error {
		calls++
		if calls == 1 {
			return fmt.Errorf("record %sdata/a: %w", prefix, kv.ErrConflict)
		}
		return nil
	}}
	if rec, err := area(s, "once/", Format{Version: 2, Steps: []Step{conflictOnce}}).Ensure(ctx(t)); err != nil || rec.Version != 2 || calls != 2 {
		t.Fatalf("Ensure = %+v, %v after %d runs of the step; want format 2, the step run again after its conflict", rec, err, calls)
	}

	put(t, s, "always/data/a", "x")
	always := Step{Name: "always conflicts", Migrate: func(ctx context.Context, s kv.Store, prefix string) error {
		return fmt.Errorf("record %sdata/a: %w", prefix, kv.ErrConflict)
	}}
	a := area(s, "always/", Format{Version: 2, Steps: []Step{always}})
	if _, err := a.Ensure(ctx(t)); err == nil || errors.Is(err, kv.ErrConflict) {
		t.Errorf("Ensure = %v; want an error that is not kv.ErrConflict", err)
	}
	g := Guard(a)
	for name, write := range map[string]func() error{
		"Put":       func() error { return g.Put(ctx(t), "always/data/b", []byte("y")) },
		"CAS":       func() error { return g.CAS(ctx(t), "always/data/b", []byte("y"), 0) },
		"Delete":    func() error { return g.Delete(ctx(t), "always/data/a") },
		"DeleteCAS": func() error { return g.DeleteCAS(ctx(t), "always/data/a", 1) },
	} {
		if err := write(); err == nil || errors.Is(err, kv.ErrConflict) {
			t.Errorf("Guard %s = %v; want the format error, not kv.ErrConflict", name, err)
		}
	}
}
