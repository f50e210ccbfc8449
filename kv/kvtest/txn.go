package kvtest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/felt-net/felt/kv"
)

// The contract of Store.Txn: all ops or none, the failed conditions of
// each verb reported as kv.ErrConflict, one index for a transaction's
// writes, and conditions that see the ops before them.

// txnCases are Run's cases for Txn.
var txnCases = []Case{
	{"TxnWritesAll", testTxnWritesAll},
	{"TxnFailedCASWritesNothing", testTxnFailedCASWritesNothing},
	{"TxnConditions", testTxnConditions},
	{"TxnSeesEarlierOps", testTxnSeesEarlierOps},
	{"TxnWakesWait", testTxnWakesWait},
	{"TxnTooMany", testTxnTooMany},
	{"TxnDelete", testTxnDelete},
	{"RaceTxnCreate", testRaceTxnCreate},
}

func testTxnWritesAll(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	mustPut(t, s, root+"old", []byte("o"))
	mustPut(t, s, root+"gone", []byte("g"))
	old, gone := mustGet(t, s, root+"old"), mustGet(t, s, root+"gone")
	idx, err := s.Txn(ctx, []kv.Op{
		{Verb: kv.OpCAS, Key: root + "new", Value: []byte("n")},
		{Verb: kv.OpCAS, Key: root + "old", Value: []byte("o2"), Index: old.ModifyIndex},
		{Verb: kv.OpPut, Key: root + "put", Value: []byte("p")},
		{Verb: kv.OpDeleteCAS, Key: root + "gone", Index: gone.ModifyIndex},
		{Verb: kv.OpCheck, Key: root + "absent"},
	})
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	if idx <= gone.ModifyIndex {
		t.Fatalf("Txn index %d, want above the last write's %d", idx, gone.ModifyIndex)
	}
	for k, v := range map[string]string{"new": "n", "old": "o2", "put": "p"} {
		if p := wantValue(t, s, root+k, []byte(v)); p.ModifyIndex != idx {
			t.Fatalf("%s: ModifyIndex %d, want the transaction's %d", k, p.ModifyIndex, idx)
		}
	}
	wantMissing(t, s, root+"gone")
	if idx, err := s.Txn(ctx, []kv.Op{{Verb: kv.OpCheck, Key: root + "new", Index: mustGet(t, s, root+"new").ModifyIndex}}); err != nil || idx != 0 {
		t.Fatalf("Txn of a check alone = %d, %v; want 0, nil", idx, err)
	}
	if idx, err := s.Txn(ctx, nil); err != nil || idx != 0 {
		t.Fatalf("empty Txn = %d, %v; want 0, nil", idx, err)
	}
}

// A failed CAS after writes that would have succeeded leaves every key as
// it was.
func testTxnFailedCASWritesNothing(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	mustPut(t, s, root+"taken", []byte("t"))
	mustPut(t, s, root+"del", []byte("d"))
	del := mustGet(t, s, root+"del")
	_, err := s.Txn(ctx, []kv.Op{
		{Verb: kv.OpCAS, Key: root + "new", Value: []byte("n")},
		{Verb: kv.OpPut, Key: root + "put", Value: []byte("p")},
		{Verb: kv.OpDeleteCAS, Key: root + "del", Index: del.ModifyIndex},
		{Verb: kv.OpCAS, Key: root + "taken", Value: []byte("mine")}, // exists: fails
	})
	if !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("Txn with a failing CAS = %v; want kv.ErrConflict", err)
	}
	wantMissing(t, s, root+"new")
	wantMissing(t, s, root+"put")
	if p := wantValue(t, s, root+"del", []byte("d")); p.ModifyIndex != del.ModifyIndex {
		t.Fatalf("del rewritten by a failed Txn")
	}
	wantValue(t, s, root+"taken", []byte("t"))
}

// Each verb's failed condition is a conflict, and nothing is written.
func testTxnConditions(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	k := root + "k"
	mustPut(t, s, k, []byte("v1"))
	stale := mustGet(t, s, k)
	mustPut(t, s, k, []byte("v2"))
	cur := mustGet(t, s, k)
	missing := root + "missing"
	for name, op := range map[string]kv.Op{
		"cas create of an existing key":   {Verb: kv.OpCAS, Key: k, Value: []byte("x")},
		"cas at a stale index":            {Verb: kv.OpCAS, Key: k, Value: []byte("x"), Index: stale.ModifyIndex},
		"cas of a missing key":            {Verb: kv.OpCAS, Key: missing, Value: []byte("x"), Index: cur.ModifyIndex},
		"delete-cas at a stale index":     {Verb: kv.OpDeleteCAS, Key: k, Index: stale.ModifyIndex},
		"delete-cas at index 0":           {Verb: kv.OpDeleteCAS, Key: k},
		"delete-cas of a missing key":     {Verb: kv.OpDeleteCAS, Key: missing, Index: cur.ModifyIndex},
		"check absent of an existing key": {Verb: kv.OpCheck, Key: k},
		"check at a stale index":          {Verb: kv.OpCheck, Key: k, Index: stale.ModifyIndex},
		"check of a missing key":          {Verb: kv.OpCheck, Key: missing, Index: cur.ModifyIndex},
	} {
		_, err := s.Txn(ctx, []kv.Op{{Verb: kv.OpPut, Key: root + "witness", Value: []byte("w")}, op})
		if !errors.Is(err, kv.ErrConflict) {
			t.Errorf("%s: %v; want kv.ErrConflict", name, err)
		}
		wantMissing(t, s, root+"witness")
		wantMissing(t, s, missing)
		if p := wantValue(t, s, k, []byte("v2")); p.ModifyIndex != cur.ModifyIndex {
			t.Fatalf("%s: key rewritten", name)
		}
	}
}

// Ops run in order: a condition sees what the ops before it wrote.
func testTxnSeesEarlierOps(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	k := root + "k"
	if _, err := s.Txn(ctx, []kv.Op{
		{Verb: kv.OpPut, Key: k, Value: []byte("v")},
		{Verb: kv.OpCheck, Key: k}, // absent? No: just written.
	}); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("check absent after a put in the same Txn = %v; want kv.ErrConflict", err)
	}
	wantMissing(t, s, k)
	mustPut(t, s, k, []byte("v"))
	p := mustGet(t, s, k)
	if _, err := s.Txn(ctx, []kv.Op{
		{Verb: kv.OpDeleteCAS, Key: k, Index: p.ModifyIndex},
		{Verb: kv.OpCAS, Key: k, Value: []byte("again")}, // a create: the key is gone now
	}); err != nil {
		t.Fatalf("delete then create in one Txn: %v", err)
	}
	wantValue(t, s, k, []byte("again"))
}

func testTxnWakesWait(t *testing.T, s kv.Store, root string) {
	idx := mustIndex(t, s, root)
	ch := startWait(ctxFor(t), s, root, idx)
	wantBlocked(t, ch)
	if _, err := s.Txn(ctxFor(t), []kv.Op{{Verb: kv.OpCAS, Key: root + "k", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if r := wantReturn(t, ch); r.err != nil || len(r.pairs) != 1 {
		t.Fatalf("Wait after a Txn: %v, %v", r.pairs, r.err)
	}
}

func testTxnTooMany(t *testing.T, s kv.Store, root string) {
	ops := make([]kv.Op, kv.MaxTxnOps+1)
	for i := range ops {
		ops[i] = kv.Op{Verb: kv.OpDeleteCAS, Key: fmt.Sprintf("%sk%d", root, i), Index: 1}
	}
	if _, err := s.Txn(ctxFor(t), ops); err == nil || errors.Is(err, kv.ErrConflict) {
		t.Fatalf("Txn of %d ops = %v; want an error, not a conflict", len(ops), err)
	}
	// The most allowed, every one a delete-cas (two of Consul's ops each).
	ops = ops[:kv.MaxTxnOps]
	if _, err := s.Txn(ctxFor(t), ops); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("Txn of %d ops on missing keys = %v; want kv.ErrConflict", len(ops), err)
	}
}

// Racers creating the same key, each with a key of its own in the same
// transaction: exactly one wins, and only the winner's own key exists.
func testRaceTxnCreate(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	errs := race(func(i int) error {
		_, err := s.Txn(ctx, []kv.Op{
			{Verb: kv.OpCAS, Key: root + "shared", Value: []byte(fmt.Sprint(i))},
			{Verb: kv.OpCAS, Key: fmt.Sprintf("%sown/%d", root, i), Value: []byte("x")},
		})
		return err
	})
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("racers %d and %d both created the key", winner, i)
			}
			winner = i
		case !errors.Is(err, kv.ErrConflict):
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no racer won")
	}
	wantValue(t, s, root+"shared", []byte(fmt.Sprint(winner)))
	pairs, _, err := s.List(ctx, root+"own/")
	if err != nil || len(pairs) != 1 || pairs[0].Key != fmt.Sprintf("%sown/%d", root, winner) {
		t.Fatalf("own keys %v, %v; want the winner's (%d) only", keys(pairs), err, winner)
	}
}

// OpDelete removes a key whatever its index, and a missing key is no
// failure; with a failing condition it removes nothing.
func testTxnDelete(t *testing.T, s kv.Store, root string) {
	ctx := ctxFor(t)
	mustPut(t, s, root+"a", []byte("a"))
	mustPut(t, s, root+"b", []byte("b"))
	if _, err := s.Txn(ctx, []kv.Op{
		{Verb: kv.OpDelete, Key: root + "a"},
		{Verb: kv.OpCheck, Key: root + "b"}, // exists: fails
	}); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("Txn with a failing check = %v; want kv.ErrConflict", err)
	}
	wantValue(t, s, root+"a", []byte("a"))
	b := mustGet(t, s, root+"b")
	if _, err := s.Txn(ctx, []kv.Op{
		{Verb: kv.OpDelete, Key: root + "a"},
		{Verb: kv.OpDelete, Key: root + "missing"},
		{Verb: kv.OpCheck, Key: root + "b", Index: b.ModifyIndex},
	}); err != nil {
		t.Fatalf("Txn: %v", err)
	}
	wantMissing(t, s, root+"a")
	wantMissing(t, s, root+"missing")
	wantValue(t, s, root+"b", []byte("b"))
	if _, err := s.Txn(ctx, []kv.Op{{Verb: kv.OpDelete, Key: root + "missing"}}); err != nil {
		t.Fatalf("Txn deleting a missing key: %v", err)
	}
}
