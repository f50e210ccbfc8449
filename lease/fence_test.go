package lease_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
)

// The fence between a lease write and deleteNetwork (recordFence): a lease
// write checks the network record's index in its own transaction, and
// deleteNetwork marks the record "deleting" before its listing and deletes
// it at the marked index. Each interleaving, on each store.

var fenceStores = map[string]func(*testing.T) kv.Store{"embedded": newStore, "consul": consulStore}

const raceRecordKey = "felt/networks/10.42.0.0-16"

// markDeleting marks racePool's record as a deleteNetwork does, and
// leaves it so: a host that stopped half-way, or one paused there.
func markDeleting(t *testing.T, s kv.Store) {
	t.Helper()
	ctx := context.Background()
	p, err := s.Get(ctx, raceRecordKey)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(p.Value, &m); err != nil {
		t.Fatal(err)
	}
	m["deleting"] = json.RawMessage("true")
	v, _ := json.Marshal(m)
	if err := s.CAS(ctx, raceRecordKey, v, p.ModifyIndex); err != nil {
		t.Fatal(err)
	}
}

// checkUnmarked: racePool's record carries no "deleting" mark.
func checkUnmarked(t *testing.T, s kv.Store) {
	t.Helper()
	p, err := s.Get(context.Background(), raceRecordKey)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(p.Value), `"deleting"`) {
		t.Fatalf("record left marked: %s", p.Value)
	}
}

func settleRacePool(t *testing.T, r *lease.Registry) lease.Network {
	t.Helper()
	n, err := r.SettleNetwork(context.Background(), lease.Spec{Backends: leasetest.Backends, Pool: racePool, Backend: "vxlan"})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Host A releases the pool's last lease and has marked the record and
// listed no lease when host B, holding the record as it read it before
// the mark, takes a lease: B's transaction fails on the mark, B takes the
// mark off and writes its lease; A's delete at the marked index fails.
func TestAcquireAfterMarkTakesTheMarkOff(t *testing.T) {
	for name, store := range fenceStores {
		t.Run(name, func(t *testing.T) {
			s := store(t)
			reg, rec := releaseRacingAcquire(t, s, "felt/networks/", acquireB)
			checkRecordKept(t, reg, rec.VNI)
			checkUnmarked(t, s)
		})
	}
}

// Host B writes its lease (checking the record, not writing it) after
// host A listed the pool empty but before A marks the record: A's mark
// succeeds, and A's listing after the mark sees B's lease, so the record
// stays, unmarked.
func TestLeaseBeforeMarkIsSeenAfterIt(t *testing.T) {
	for name, store := range fenceStores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := store(t)
			hs := &hooked{Store: s, op: "CAS", when: updateUnder("felt/networks/")}
			regA := lease.NewRegistry(hs, "felt/", nil)
			regB := lease.NewRegistry(s, "felt/", nil)
			rec := settleRacePool(t, regB)
			var lb lease.Lease
			var errB error
			hs.hook = func() { lb, errB = acquireB(regB, rec) }
			// A's RequestPool failed: it forgets the record it reserved.
			if err := regA.ForgetNetwork(ctx, racePool); err != nil {
				t.Fatal(err)
			}
			if hs.hook != nil {
				t.Fatal("the race was not staged")
			}
			if errB != nil {
				t.Fatalf("B: %v", errB)
			}
			checkRecordKept(t, regB, rec.VNI)
			checkUnmarked(t, s)
			if held, err := regB.Held(ctx, racePool, lb.Subnet, "host-b"); err != nil || !held {
				t.Fatalf("B's lease %s: held %v, %v", lb.Subnet, held, err)
			}
		})
	}
}

// A host stopped after marking the record. Host B's Acquire meets the
// mark and takes it off; as it does, host A (the same pool, released
// again) deletes the marked record first: B's compare-and-set fails, B
// finds the record gone and makes it again with its VNI (claim kept), and
// writes its lease against the new record.
func TestAcquireLosingToDeleteOfMarkedRecordMakesItAgain(t *testing.T) {
	for name, store := range fenceStores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := store(t)
			hs := &hooked{Store: s, op: "CAS", when: updateUnder("felt/networks/")}
			regA := lease.NewRegistry(s, "felt/", nil)
			regB := lease.NewRegistry(hs, "felt/", nil)
			rec := settleRacePool(t, regA)
			markDeleting(t, s)
			hs.hook = func() {
				if err := regA.ForgetNetwork(ctx, racePool); err != nil {
					t.Error(err)
				}
				if _, err := regA.GetNetwork(ctx, racePool); err == nil {
					t.Error("A did not delete the marked record of an empty pool")
				}
			}
			lb, err := acquireB(regB, rec)
			if err != nil {
				t.Fatalf("B: %v", err)
			}
			if hs.hook != nil {
				t.Fatal("the race was not staged")
			}
			checkRecordKept(t, regA, rec.VNI)
			checkUnmarked(t, s)
			if held, err := regA.Held(ctx, racePool, lb.Subnet, "host-b"); err != nil || !held {
				t.Fatalf("B's lease %s: held %v, %v", lb.Subnet, held, err)
			}
		})
	}
}

// A record left marked by a host that stopped half-way goes with the next
// removal of the pool's last lease (it is not marked again), and a lease
// taken in the pool before that takes the mark off first.
func TestMarkedRecordLeftBehind(t *testing.T) {
	for name, store := range fenceStores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := store(t)
			r := lease.NewRegistry(newCalls(s), "felt/", nil)
			rec := settleRacePool(t, r)
			markDeleting(t, s)
			// ipam reads the record first: B's Network is the marked one.
			n, err := r.ReservePool(ctx, racePool, 0)
			if err != nil {
				t.Fatal(err)
			}
			l, err := acquireB(r, n)
			if err != nil {
				t.Fatal(err)
			}
			checkUnmarked(t, s)
			if err := r.Release(ctx, racePool, l.Subnet, "host-b"); err != nil {
				t.Fatal(err)
			}
			if _, err := r.GetNetwork(ctx, racePool); err == nil {
				t.Fatal("record kept after the last release")
			}
			// Marked and left again: ForgetNetwork removes it, VNI claim
			// included, without marking it again.
			rec = settleRacePool(t, r)
			markDeleting(t, s)
			c := lease.StoreOf(r).(*calls)
			c.reset()
			if err := r.ForgetNetwork(ctx, racePool); err != nil {
				t.Fatal(err)
			}
			if _, err := r.GetNetwork(ctx, racePool); err == nil {
				t.Fatal("marked record of an empty pool kept")
			}
			if _, err := s.Get(ctx, "felt/vnis/"+strconv.Itoa(rec.VNI)); err == nil {
				t.Fatal("VNI claim kept")
			}
			// One transaction: the delete of record and claim; no mark.
			if n := c.counts(); n["CAS"] != 0 || n["Txn"] != 1 {
				t.Fatalf("ForgetNetwork of a marked record wrote it: %v", n)
			}
		})
	}
}
