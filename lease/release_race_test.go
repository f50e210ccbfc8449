package lease_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/lease"
)

// pausing is a store that runs hook once, just before the first DeleteCAS
// of a key with the given prefix: another host acting at the worst moment.
type pausing struct {
	kv.Store
	prefix string
	hook   func()
}

func (s *pausing) DeleteCAS(ctx context.Context, key string, index uint64) error {
	if h := s.hook; h != nil && strings.HasPrefix(key, s.prefix) {
		s.hook = nil
		h()
	}
	return s.Store.DeleteCAS(ctx, key, index)
}

// While host A releases the last lease of a pool, host B takes a lease of
// it using the existing record (no write to the record: nothing changed).
// A then deletes the record and its VNI claim, though B holds a lease:
// the pool is in use without a record, its VNI is free for another pool,
// and a host creating the network next gets whatever VNI is lowest.
func TestReleaseRacingAcquireKeepsTheRecord(t *testing.T) {
	ctx := context.Background()
	store, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ps := &pausing{Store: store, prefix: "felt/networks/"}
	regA := lease.NewRegistry(ps, "felt/", nil)
	regB := lease.NewRegistry(store, "felt/", nil)
	pool := netip.MustParsePrefix("10.42.0.0/16")
	spec := lease.Spec{Pool: pool, Backend: lease.BackendVXLAN}
	recA, err := regA.EnsureNetwork(ctx, spec, true)
	if err != nil {
		t.Fatal(err)
	}
	la, err := regA.Acquire(ctx, lease.AcquireRequest{Network: recA, Owner: lease.Owner{HostID: "host-a", PublicIP: netip.MustParseAddr("192.0.2.1")}})
	if err != nil {
		t.Fatal(err)
	}
	var lb lease.Lease
	ps.hook = func() { // B, between A's "no lease left" and its delete
		recB, err := regB.EnsureNetwork(ctx, spec, true)
		if err != nil {
			t.Errorf("B: %v", err)
			return
		}
		lb, err = regB.Acquire(ctx, lease.AcquireRequest{Network: recB, Owner: lease.Owner{HostID: "host-b", PublicIP: netip.MustParseAddr("192.0.2.2")}})
		if err != nil {
			t.Errorf("B: %v", err)
		}
	}
	if err := regA.Release(ctx, pool, la.Subnet, "host-a"); err != nil {
		t.Fatal(err)
	}
	if !lb.Subnet.IsValid() {
		t.Fatal("the race was not staged: B got no lease")
	}
	rec, err := regB.GetNetwork(ctx, pool)
	if err != nil {
		t.Fatalf("host-b holds lease %s of %s, but the network record is gone: %v", lb.Subnet, pool, err)
	}
	if rec.VNI != recA.VNI {
		t.Fatalf("record's VNI %d, host-b uses %d", rec.VNI, recA.VNI)
	}
	// Another pool must not get the VNI the first one still uses.
	other, err := regB.EnsureNetwork(ctx, lease.Spec{Pool: netip.MustParsePrefix("10.43.0.0/16"), Backend: lease.BackendVXLAN}, true)
	if err != nil {
		t.Fatal(err)
	}
	if other.VNI == recA.VNI {
		t.Fatalf("pool 10.43.0.0/16 got VNI %d, still used by %s", other.VNI, pool)
	}
}

// The other order: A has removed the record and is about to remove the VNI
// claim when B, holding the record as it was, takes a lease. B makes the
// record again with its VNI, and the claim stays with it.
func TestAcquireAfterRecordRemovedKeepsTheClaim(t *testing.T) {
	ctx := context.Background()
	store, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ps := &pausing{Store: store, prefix: "felt/vnis/"}
	regA := lease.NewRegistry(ps, "felt/", nil)
	regB := lease.NewRegistry(store, "felt/", nil)
	pool := netip.MustParsePrefix("10.42.0.0/16")
	rec, err := regA.EnsureNetwork(ctx, lease.Spec{Pool: pool, Backend: lease.BackendVXLAN}, true)
	if err != nil {
		t.Fatal(err)
	}
	la, err := regA.Acquire(ctx, lease.AcquireRequest{Network: rec, Owner: lease.Owner{HostID: "host-a", PublicIP: netip.MustParseAddr("192.0.2.1")}})
	if err != nil {
		t.Fatal(err)
	}
	var lb lease.Lease
	ps.hook = func() { // B, with the record it read before A removed it
		lb, err = regB.Acquire(ctx, lease.AcquireRequest{Network: rec, Owner: lease.Owner{HostID: "host-b", PublicIP: netip.MustParseAddr("192.0.2.2")}})
		if err != nil {
			t.Errorf("B: %v", err)
		}
	}
	if err := regA.Release(ctx, pool, la.Subnet, "host-a"); err != nil {
		t.Fatal(err)
	}
	if !lb.Subnet.IsValid() {
		t.Fatal("the race was not staged: B got no lease")
	}
	now, err := regB.GetNetwork(ctx, pool)
	if err != nil || now.VNI != rec.VNI {
		t.Fatalf("host-b holds lease %s of %s with VNI %d; record %+v, %v", lb.Subnet, pool, rec.VNI, now, err)
	}
	other, err := regB.EnsureNetwork(ctx, lease.Spec{Pool: netip.MustParsePrefix("10.43.0.0/16"), Backend: lease.BackendVXLAN}, true)
	if err != nil {
		t.Fatal(err)
	}
	if other.VNI == rec.VNI {
		t.Fatalf("pool 10.43.0.0/16 got VNI %d, still used by %s", other.VNI, pool)
	}
}
