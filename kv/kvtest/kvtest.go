// Package kvtest is the contract every kv.Store implementation must meet,
// written once so the embedded store and Consul are held to the same
// semantics (Consul's, which the interface is modelled on).
package kvtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
)

// waitTimeout bounds how long a Wait that should return may take; generous
// because Consul answers blocking queries over HTTP on a loaded CI machine.
const waitTimeout = 10 * time.Second

// quiet is how long a Wait that should block is watched before a write.
const quiet = 300 * time.Millisecond

// Run runs the contract suite. newStore is called once per subtest and may
// return a store shared with other subtests (say, one Consul agent): every
// subtest keeps its keys under its own "kvtest/<name>/" root. Run closes each
// store it is given, so newStore should not.
func Run(t *testing.T, newStore func(t *testing.T) kv.Store) {
	closing := func(t *testing.T) kv.Store {
		s := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	Suite(t, "kvtest", closing, append([]Case{
		{"GetMissing", testGetMissing},
		{"PutGet", testPutGet},
		{"CASCreate", testCASCreate},
		{"CASUpdate", testCASUpdate},
		{"CASMissingWithIndex", testCASMissingWithIndex},
		{"Delete", testDelete},
		{"DeleteCAS", testDeleteCAS},
		{"List", testList},
		{"ListEmpty", testListEmpty},
		{"WaitWakesOnPut", testWaitWakesOnPut},
		{"WaitWakesOnDelete", testWaitWakesOnDelete},
		{"WaitStaleIndexReturnsAtOnce", testWaitStaleIndex},
		{"WaitCancel", testWaitCancel},
		{"WaitDeadline", testWaitDeadline},
		{"RaceCreate", testRaceCreate},
		{"RaceCounter", testRaceCounter},
	}, txnCases...))
}

// Case is one test of a suite run against every store: Fn gets the store
// and the key root it may use.
type Case struct {
	Name string
	Fn   func(t *testing.T, s kv.Store, root string)
}

// Suite runs each case as a subtest with a store from newStore and a key
// root of its own, "<base>/<subtest name>-<nanoseconds>/", so stores may be
// shared and repeated runs (-count) against a persistent store do not see
// old keys. Other packages' store-backed suites (storeformat) use it too.
func Suite(t *testing.T, base string, newStore func(t *testing.T) kv.Store, cases []Case) {
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			tc.Fn(t, newStore(t), rootFor(t, base))
		})
	}
}

var unsafeKeyChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// rootFor is the key root of the running subtest under base.
func rootFor(t *testing.T, base string) string {
	name := unsafeKeyChars.ReplaceAllString(t.Name(), "_")
	return fmt.Sprintf("%s/%s-%d/", base, name, time.Now().UnixNano())
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, s kv.Store, key string, value []byte) {
	t.Helper()
	if err := s.Put(ctxFor(t), key, value); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func mustGet(t *testing.T, s kv.Store, key string) kv.Pair {
	t.Helper()
	p, err := s.Get(ctxFor(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return p
}

func wantMissing(t *testing.T, s kv.Store, key string) {
	t.Helper()
	p, err := s.Get(ctxFor(t), key)
	if !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get(%q) = %+v, %v; want kv.ErrNotFound", key, p, err)
	}
}

func wantValue(t *testing.T, s kv.Store, key string, want []byte) kv.Pair {
	t.Helper()
	p := mustGet(t, s, key)
	if p.Key != key || !bytes.Equal(p.Value, want) {
		t.Fatalf("Get(%q) = {%q, %q}; want {%q, %q}", key, p.Key, p.Value, key, want)
	}
	if p.ModifyIndex == 0 {
		t.Fatalf("Get(%q).ModifyIndex = 0; want > 0", key)
	}
	return p
}

func testGetMissing(t *testing.T, s kv.Store, root string) {
	wantMissing(t, s, root+"missing")
}

func testPutGet(t *testing.T, s kv.Store, root string) {
	k := root + "k"
	mustPut(t, s, k, []byte("one"))
	p1 := wantValue(t, s, k, []byte("one"))

	// Binary-safe, and overwriting moves the index forward.
	v2 := []byte{0, 1, 2, 0xff, '/', 0}
	mustPut(t, s, k, v2)
	p2 := wantValue(t, s, k, v2)
	if p2.ModifyIndex <= p1.ModifyIndex {
		t.Fatalf("ModifyIndex after overwrite = %d; want > %d", p2.ModifyIndex, p1.ModifyIndex)
	}

	// An empty value is a present key, not a missing one.
	e := root + "empty"
	mustPut(t, s, e, nil)
	wantValue(t, s, e, nil)
}

func testCASCreate(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	k := root + "k"
	if err := s.CAS(ctx, k, []byte("first"), 0); err != nil {
		t.Fatalf("CAS create on absent key: %v", err)
	}
	p := wantValue(t, s, k, []byte("first"))
	if err := s.CAS(ctx, k, []byte("second"), 0); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("second CAS create = %v; want kv.ErrConflict", err)
	}
	if got := wantValue(t, s, k, []byte("first")); got.ModifyIndex != p.ModifyIndex {
		t.Fatalf("failed CAS changed ModifyIndex %d -> %d", p.ModifyIndex, got.ModifyIndex)
	}
}

func testCASUpdate(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	k := root + "k"
	mustPut(t, s, k, []byte("v1"))
	stale := mustGet(t, s, k)
	mustPut(t, s, k, []byte("v2"))
	cur := wantValue(t, s, k, []byte("v2"))

	if err := s.CAS(ctx, k, []byte("lost"), stale.ModifyIndex); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("CAS with stale index %d = %v; want kv.ErrConflict", stale.ModifyIndex, err)
	}
	wantValue(t, s, k, []byte("v2"))

	if err := s.CAS(ctx, k, []byte("v3"), cur.ModifyIndex); err != nil {
		t.Fatalf("CAS with current index %d: %v", cur.ModifyIndex, err)
	}
	next := wantValue(t, s, k, []byte("v3"))
	if next.ModifyIndex <= cur.ModifyIndex {
		t.Fatalf("ModifyIndex after CAS = %d; want > %d", next.ModifyIndex, cur.ModifyIndex)
	}
	// The index just used is now stale too.
	if err := s.CAS(ctx, k, []byte("lost"), cur.ModifyIndex); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("CAS reusing index %d = %v; want kv.ErrConflict", cur.ModifyIndex, err)
	}
}

func testCASMissingWithIndex(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	k := root + "k"
	// Learn a real index, then delete the key: a CAS with it must not
	// resurrect the key.
	mustPut(t, s, k, []byte("v"))
	p := mustGet(t, s, k)
	if err := s.Delete(ctx, k); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.CAS(ctx, k, []byte("zombie"), p.ModifyIndex); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("CAS on deleted key with its old index = %v; want kv.ErrConflict", err)
	}
	wantMissing(t, s, k)
}

func testDelete(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	k, other := root+"k", root+"kk"
	mustPut(t, s, k, []byte("v"))
	mustPut(t, s, other, []byte("w"))
	if err := s.Delete(ctx, k); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMissing(t, s, k)
	wantValue(t, s, other, []byte("w")) // not a prefix delete
	if err := s.Delete(ctx, k); err != nil {
		t.Fatalf("Delete of missing key = %v; want nil", err)
	}
}

func testDeleteCAS(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	k := root + "k"
	if err := s.DeleteCAS(ctx, k, 1); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("DeleteCAS of missing key = %v; want kv.ErrConflict", err)
	}
	if err := s.DeleteCAS(ctx, k, 0); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("DeleteCAS of missing key at index 0 = %v; want kv.ErrConflict", err)
	}

	mustPut(t, s, k, []byte("v1"))
	stale := mustGet(t, s, k)
	mustPut(t, s, k, []byte("v2"))
	cur := mustGet(t, s, k)

	if err := s.DeleteCAS(ctx, k, stale.ModifyIndex); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("DeleteCAS with stale index = %v; want kv.ErrConflict", err)
	}
	if err := s.DeleteCAS(ctx, k, 0); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("DeleteCAS of existing key at index 0 = %v; want kv.ErrConflict", err)
	}
	wantValue(t, s, k, []byte("v2"))

	if err := s.DeleteCAS(ctx, k, cur.ModifyIndex); err != nil {
		t.Fatalf("DeleteCAS with current index: %v", err)
	}
	wantMissing(t, s, k)
	if err := s.DeleteCAS(ctx, k, cur.ModifyIndex); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("second DeleteCAS = %v; want kv.ErrConflict", err)
	}
}

func testList(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	// Written out of order, with neighbours that share the string prefix
	// "p" but not "p/".
	for _, k := range []string{"p/b", "p2/a", "p/c/d", "p", "pa", "p/a", "o/z"} {
		mustPut(t, s, root+k, []byte("val-"+k))
	}
	pairs, idx, err := s.List(ctx, root+"p/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	want := []string{"p/a", "p/b", "p/c/d"}
	if len(pairs) != len(want) {
		t.Fatalf("List(%q) returned %d pairs %v; want %v", root+"p/", len(pairs), keys(pairs), want)
	}
	var maxIdx uint64
	for i, p := range pairs {
		if p.Key != root+want[i] {
			t.Fatalf("List[%d].Key = %q; want %q (all: %v)", i, p.Key, root+want[i], keys(pairs))
		}
		if string(p.Value) != "val-"+want[i] {
			t.Errorf("List[%d].Value = %q; want %q", i, p.Value, "val-"+want[i])
		}
		if g := mustGet(t, s, p.Key); g.ModifyIndex != p.ModifyIndex {
			t.Errorf("List[%d].ModifyIndex = %d; Get says %d", i, p.ModifyIndex, g.ModifyIndex)
		}
		maxIdx = max(maxIdx, p.ModifyIndex)
	}
	if idx < maxIdx {
		t.Errorf("List index %d is below its newest pair's ModifyIndex %d", idx, maxIdx)
	}

	// A plain string prefix: "p" covers all the neighbours too.
	pairs, _, err = s.List(ctx, root+"p")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if got, want := len(pairs), 6; got != want {
		t.Fatalf("List(%q) returned %v; want %d keys", root+"p", keys(pairs), want)
	}
}

func testListEmpty(t *testing.T, s kv.Store, root string) {
	pairs, idx, err := s.List(ctxFor(t), root+"nothing/")
	if err != nil {
		t.Fatalf("List of empty prefix: %v", err)
	}
	if len(pairs) != 0 {
		t.Fatalf("List of empty prefix = %v; want none", keys(pairs))
	}
	// Wait treats 0 as "don't block", so an index to wait on must be > 0.
	if idx == 0 {
		t.Fatalf("List of empty prefix returned index 0; want > 0")
	}
}

type waitResult struct {
	pairs []kv.Pair
	idx   uint64
	err   error
}

// mustIndex is the store index that List reports for prefix, to Wait on.
func mustIndex(t *testing.T, s kv.Store, prefix string) uint64 {
	t.Helper()
	_, idx, err := s.List(ctxFor(t), prefix)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return idx
}

func startWait(ctx context.Context, s kv.Store, prefix string, idx uint64) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		pairs, idx, err := s.Wait(ctx, prefix, idx)
		ch <- waitResult{pairs, idx, err}
	}()
	return ch
}

func wantBlocked(t *testing.T, ch <-chan waitResult) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Wait returned with nothing written: %v, index %d, %v", keys(r.pairs), r.idx, r.err)
	case <-time.After(quiet):
	}
}

func wantReturn(t *testing.T, ch <-chan waitResult) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Wait: %v", r.err)
		}
		return r
	case <-time.After(waitTimeout):
		t.Fatalf("Wait did not return within %s of a write under its prefix", waitTimeout)
		return waitResult{}
	}
}

func testWaitWakesOnPut(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	prefix := root + "w/"
	mustPut(t, s, prefix+"a", []byte("1"))
	idx := mustIndex(t, s, prefix)

	ch := startWait(ctx, s, prefix, idx)
	wantBlocked(t, ch)
	mustPut(t, s, prefix+"b", []byte("2"))
	r := wantReturn(t, ch)
	if r.idx <= idx {
		t.Fatalf("Wait index = %d; want > %d", r.idx, idx)
	}
	if got := keys(r.pairs); len(got) != 2 || got[1] != prefix+"b" {
		t.Fatalf("Wait pairs = %v; want %sa and %sb", got, prefix, prefix)
	}

	// Waiting again on the new index blocks again until the next write.
	ch = startWait(ctx, s, prefix, r.idx)
	wantBlocked(t, ch)
	mustPut(t, s, prefix+"a", []byte("changed"))
	r2 := wantReturn(t, ch)
	if r2.idx <= r.idx || len(r2.pairs) != 2 || string(r2.pairs[0].Value) != "changed" {
		t.Fatalf("second Wait = %+v, index %d; want the changed a, index > %d", r2.pairs, r2.idx, r.idx)
	}
}

func testWaitWakesOnDelete(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	prefix := root + "w/"
	mustPut(t, s, prefix+"a", []byte("1"))
	mustPut(t, s, prefix+"b", []byte("2"))
	idx := mustIndex(t, s, prefix)
	ch := startWait(ctx, s, prefix, idx)
	wantBlocked(t, ch)
	// Deleting the newest key must still move the prefix's index forward.
	if err := s.Delete(ctx, prefix+"b"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	r := wantReturn(t, ch)
	if r.idx <= idx {
		t.Fatalf("Wait index after delete = %d; want > %d", r.idx, idx)
	}
	if got := keys(r.pairs); len(got) != 1 || got[0] != prefix+"a" {
		t.Fatalf("Wait pairs after delete = %v; want only %sa", got, prefix)
	}
}

func testWaitStaleIndex(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	prefix := root + "w/"
	mustPut(t, s, prefix+"a", []byte("1"))
	idx := mustIndex(t, s, prefix)
	// The write happens before Wait is called: Wait must see that its
	// index is already stale instead of sleeping until the next write.
	mustPut(t, s, prefix+"a", []byte("2"))
	r := wantReturn(t, startWait(ctx, s, prefix, idx))
	if r.idx <= idx || len(r.pairs) != 1 || string(r.pairs[0].Value) != "2" {
		t.Fatalf("Wait on stale index = %v, index %d; want value 2, index > %d", r.pairs, r.idx, idx)
	}
}

func testWaitCancel(t *testing.T, s kv.Store, root string) {
	prefix := root + "w/"
	mustPut(t, s, prefix+"a", []byte("1"))
	idx := mustIndex(t, s, prefix)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := startWait(ctx, s, prefix, idx)
	wantBlocked(t, ch)
	cancel()
	select {
	case r := <-ch:
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("Wait after cancel = %v; want context.Canceled", r.err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Wait did not return within %s of its context being canceled", waitTimeout)
	}
}

func testWaitDeadline(t *testing.T, s kv.Store, root string) {
	prefix := root + "w/"
	mustPut(t, s, prefix+"a", []byte("1"))
	idx := mustIndex(t, s, prefix)
	start := time.Now() // before the deadline is set: it is quiet from here at most
	ctx, cancel := context.WithTimeout(context.Background(), quiet)
	defer cancel()
	_, _, err := s.Wait(ctx, prefix, idx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past deadline = %v; want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d < quiet || d > waitTimeout {
		t.Fatalf("Wait with %s deadline returned after %s", quiet, d)
	}
}

const racers = 20

// race runs fn for racers goroutines released at once, and returns their
// errors by racer.
func race(fn func(racer int) error) []error {
	errs := make([]error, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func testRaceCreate(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	k := root + "k"
	errs := race(func(i int) error { return s.CAS(ctx, k, []byte(strconv.Itoa(i)), 0) })

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("CAS create succeeded for both racer %d and %d", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, kv.ErrConflict):
			t.Fatalf("racer %d: CAS = %v; want nil or kv.ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("no racer's CAS create succeeded")
	}
	wantValue(t, s, k, []byte(strconv.Itoa(winner)))
}

func testRaceCounter(t *testing.T, s kv.Store, root string) {
	const perRacer = 5
	ctx := ctxFor(t)
	k := root + "counter"
	errs := race(func(int) error {
		for range perRacer {
			if err := increment(ctx, s, k); err != nil {
				return err
			}
		}
		return nil
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	wantValue(t, s, k, []byte(strconv.Itoa(racers*perRacer)))
}

// increment is the read-modify-CAS loop felt itself uses for shared state.
func increment(ctx context.Context, s kv.Store, key string) error {
	for attempt := 0; attempt < 10000; attempt++ {
		var n int
		var idx uint64
		p, err := s.Get(ctx, key)
		switch {
		case errors.Is(err, kv.ErrNotFound):
		case err != nil:
			return err
		default:
			if n, err = strconv.Atoi(string(p.Value)); err != nil {
				return fmt.Errorf("counter value %q: %w", p.Value, err)
			}
			idx = p.ModifyIndex
		}
		err = s.CAS(ctx, key, []byte(strconv.Itoa(n+1)), idx)
		if !errors.Is(err, kv.ErrConflict) {
			return err
		}
	}
	return errors.New("increment: too many conflicts")
}

func keys(pairs []kv.Pair) []string {
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.Key
	}
	return out
}
