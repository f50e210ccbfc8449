package boltkv

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/kvtest"
)

func TestContract(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Store {
		s, err := Open(filepath.Join(t.TempDir(), "felt.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestOpenCreatesParentDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "felt.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "felt.db")

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "p/a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "p/b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	// Delete the newest key, so the highest index is only remembered by
	// the store-wide counters, not by any surviving key.
	if err := s.Delete(ctx, "p/b"); err != nil {
		t.Fatal(err)
	}
	before, err := s.Get(ctx, "p/a")
	if err != nil {
		t.Fatal(err)
	}
	_, listIdx, err := s.List(ctx, "p/")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()

	after, err := s.Get(ctx, "p/a")
	if err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
	if string(after.Value) != "1" || after.ModifyIndex != before.ModifyIndex {
		t.Fatalf("after reopen p/a = %q@%d; want %q@%d", after.Value, after.ModifyIndex, "1", before.ModifyIndex)
	}
	if _, err := s.Get(ctx, "p/b"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("deleted key after reopen: %v; want ErrNotFound", err)
	}
	_, idx, err := s.List(ctx, "p/")
	if err != nil {
		t.Fatal(err)
	}
	if idx != listIdx {
		t.Fatalf("prefix index after reopen = %d; want %d", idx, listIdx)
	}

	// Indexes never go backwards across a restart: a watcher holding the
	// old index must see new writes, and CAS on old indexes must not match.
	if err := s.Put(ctx, "q", []byte("x")); err != nil {
		t.Fatal(err)
	}
	q, err := s.Get(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	if q.ModifyIndex <= listIdx {
		t.Fatalf("first write after reopen has index %d; want > %d", q.ModifyIndex, listIdx)
	}
}

func TestSecondOpenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "felt.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	start := time.Now()
	s2, err := Open(path)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a held file succeeded; want an error")
	}
	if d := time.Since(start); d > openTimeout+5*time.Second {
		t.Fatalf("second Open took %s; want about %s", d, openTimeout)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second Open error %q should name the file and say it is locked", err)
	}
}

func TestWaitAfterCloseReturns(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, idx, err := s.List(ctx, "p/")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := s.Wait(ctx, "p/", idx)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Wait on a closed store returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
}

// A Wait after the index an empty store's prefix answers sees the store's
// very first write: that write's index must be above it (it was 1 = the
// empty answer's, and the Wait slept through the write).
func TestWaitSeesFirstWrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, idx, err := s.List(ctx, "a/")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan []kv.Pair, 1)
	go func() {
		pairs, _, _ := s.Wait(ctx, "a/", idx)
		done <- pairs
	}()
	if err := s.Put(ctx, "a/x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if pairs := <-done; len(pairs) != 1 {
		t.Fatalf("Wait after index %d: %d pairs, want the first write", idx, len(pairs))
	}
}
