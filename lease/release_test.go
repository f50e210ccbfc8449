package lease_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
)

func TestReleaseLastLeaseRemovesNetwork(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	n, _ := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, Backend: "host-gw"})
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1")})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Release(ctx, pool, l.Subnet, "someone-else"); err != nil {
		t.Fatal(err)
	}
	if ls, _ := r.Leases(ctx, pool); len(ls) != 1 {
		t.Fatal("another host's release removed our lease")
	}
	if err := r.Release(ctx, pool, l.Subnet, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetNetwork(ctx, pool); err == nil {
		t.Fatal("network record still there after the last lease went")
	}
	// Now the pool can be created with other options.
	if _, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, Backend: "vxlan"}); err != nil {
		t.Fatal(err)
	}
}

var racePool = netip.MustParsePrefix("10.42.0.0/16")

// releaseRacingAcquire stages host A releasing the last lease of racePool
// while host B takes one: B acts through acquire just before A's first
// conditional delete of a key under pausePrefix. It returns A's network
// record (B's VNI) once A's Release returned, failing t if B got no lease.
func releaseRacingAcquire(t *testing.T, store kv.Store, pausePrefix string, acquire func(b *lease.Registry, rec lease.Network) (lease.Lease, error)) (*lease.Registry, lease.Network) {
	t.Helper()
	ctx := context.Background()
	ps := &hooked{Store: store, op: "DeleteCAS", when: under(pausePrefix)}
	regA := lease.NewRegistry(ps, "felt/", nil)
	regB := lease.NewRegistry(store, "felt/", nil)
	rec, err := regA.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: racePool, Backend: "vxlan"})
	if err != nil {
		t.Fatal(err)
	}
	la, err := regA.Acquire(ctx, lease.AcquireRequest{Network: rec, Owner: lease.Owner{HostID: "host-a", PublicIP: netip.MustParseAddr("192.0.2.1")}})
	if err != nil {
		t.Fatal(err)
	}
	var lb lease.Lease
	ps.hook = func() {
		if lb, err = acquire(regB, rec); err != nil {
			t.Errorf("B: %v", err)
		}
	}
	if err := regA.Release(ctx, racePool, la.Subnet, "host-a"); err != nil {
		t.Fatal(err)
	}
	if !lb.Subnet.IsValid() {
		t.Fatal("the race was not staged: B got no lease")
	}
	return regB, rec
}

func acquireB(reg *lease.Registry, n lease.Network) (lease.Lease, error) {
	return reg.Acquire(context.Background(), lease.AcquireRequest{Network: n, Owner: lease.Owner{HostID: "host-b", PublicIP: netip.MustParseAddr("192.0.2.2")}})
}

// checkRecordKept: racePool's record is there with vni, and another pool
// created now gets another VNI.
func checkRecordKept(t *testing.T, reg *lease.Registry, vni int) {
	t.Helper()
	ctx := context.Background()
	now, err := reg.GetNetwork(ctx, racePool)
	if err != nil || now.VNI != vni {
		t.Fatalf("host-b holds a lease of %s with VNI %d; the record is %+v, %v", racePool, vni, now, err)
	}
	other, err := reg.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: netip.MustParsePrefix("10.43.0.0/16"), Backend: "vxlan"})
	if err != nil {
		t.Fatal(err)
	}
	if other.VNI == vni {
		t.Fatalf("pool 10.43.0.0/16 got VNI %d, still used by %s", other.VNI, racePool)
	}
}

// While host A releases the last lease of a pool, host B takes a lease of
// it using the existing record (which it does not write: nothing changed).
// A deleted the record and its VNI claim though B held a lease: the pool
// was in use without a record, its VNI free for another pool, and the next
// host creating the network got whatever VNI was lowest. On each store:
// A marked the record before its listing (Consul keeps the ModifyIndex of
// a write that changes nothing, so the mark must change its bytes); B's
// settle finds the record unchanged but marked, B's Acquire takes the mark
// off before it writes its lease, and A's delete at the marked index fails.
func TestReleaseRacingAcquireKeepsTheRecord(t *testing.T) {
	for name, store := range map[string]func(*testing.T) kv.Store{"embedded": newStore, "consul": consulStore} {
		t.Run(name, func(t *testing.T) {
			reg, rec := releaseRacingAcquire(t, store(t), "felt/networks/", func(b *lease.Registry, _ lease.Network) (lease.Lease, error) {
				n, err := b.SettleNetwork(context.Background(), lease.Spec{Backends: leasetest.Backends, Pool: racePool, Backend: "vxlan"})
				if err != nil {
					return lease.Lease{}, err
				}
				return acquireB(b, n)
			})
			checkRecordKept(t, reg, rec.VNI)
		})
	}
}

// The other order: A has removed the record and is about to remove the VNI
// claim when B, holding the record as it read it before, takes a lease. B
// makes the record again with its VNI, and the claim stays with it.
func TestAcquireAfterRecordRemovedKeepsTheClaim(t *testing.T) {
	reg, rec := releaseRacingAcquire(t, newStore(t), "felt/vnis/", acquireB)
	checkRecordKept(t, reg, rec.VNI)
}

// Many hosts creating, leasing from and releasing one network at once, on
// each store.
func TestChurnOnePool(t *testing.T) {
	eachStore(t, func(t *testing.T, r *lease.Registry) {
		leasetest.ChurnOnePool(t, r, netip.MustParsePrefix("10.62.0.0/16"), 8, 30)
	})
}
