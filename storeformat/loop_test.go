package storeformat

import (
	"context"
	"errors"
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
