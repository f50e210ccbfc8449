package lease_test

import (
	"context"
	"testing"

	"github.com/felt-net/felt/lease"
)

// Release's transaction conflicts when an owner entry of
// the lease changed since Release read it (rewritten meanwhile, still
// naming the lease). Its fallback, removeLease(l, nil), deletes the lease
// by itself and returns at once: forgetOwner, which the comment promises
// ("its entries by forgetOwner's rule"), runs only on removeLease's own
// conflict path, so the lease's entries stay behind, naming a lease that
// is gone.
func TestReleaseFallbackDropsEntries(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	ipKey := "felt/lease-owners/10.42.0.0-16/ip/192.0.2.2"
	hs := &hooked{Store: s, op: "DeleteCAS", when: under("felt/leases/")}
	r := lease.NewRegistry(hs, "felt/", nil)
	rec := settleRacePool(t, r)
	l, err := acquireB(r, rec)
	if err != nil {
		t.Fatal(err)
	}
	hs.hook = func() {
		// The entry rewritten, same meaning (a trailing newline).
		p, err := s.Get(ctx, ipKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CAS(ctx, ipKey, append(p.Value, '\n'), p.ModifyIndex); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Release(ctx, racePool, l.Subnet, "host-b"); err != nil {
		t.Fatal(err)
	}
	if hs.hook != nil {
		t.Fatal("the race was not staged")
	}
	if held, _ := r.Held(ctx, racePool, l.Subnet, "host-b"); held {
		t.Fatal("lease not released")
	}
	pairs, _, err := s.List(ctx, "felt/lease-owners/")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, p := range pairs {
		left = append(left, p.Key)
	}
	if len(left) > 0 {
		t.Fatalf("owner entries of the released lease %s left: %v", l.Subnet, left)
	}
}
