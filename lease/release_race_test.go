package lease_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
	"github.com/felt-net/felt/testkit/consul"
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

var racePool = netip.MustParsePrefix("10.42.0.0/16")

// releaseRacingAcquire stages host A releasing the last lease of racePool
// while host B takes one: B acts through acquire just before A's first
// conditional delete of a key under pausePrefix. It returns A's network
// record (B's VNI) once A's Release returned, failing t if B got no lease.
func releaseRacingAcquire(t *testing.T, pausePrefix string, acquire func(b *lease.Registry, rec lease.Network) (lease.Lease, error)) (*lease.Registry, lease.Network) {
	t.Helper()
	ctx := context.Background()
	store, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ps := &pausing{Store: store, prefix: pausePrefix}
	regA := lease.NewRegistry(ps, "felt/", nil)
	regB := lease.NewRegistry(store, "felt/", nil)
	rec, err := regA.SettleNetwork(ctx, lease.Spec{Pool: racePool, Backend: lease.BackendVXLAN})
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
	other, err := reg.SettleNetwork(ctx, lease.Spec{Pool: netip.MustParsePrefix("10.43.0.0/16"), Backend: lease.BackendVXLAN})
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
// host creating the network got whatever VNI was lowest.
func TestReleaseRacingAcquireKeepsTheRecord(t *testing.T) {
	reg, rec := releaseRacingAcquire(t, "felt/networks/", func(b *lease.Registry, _ lease.Network) (lease.Lease, error) {
		n, err := b.SettleNetwork(context.Background(), lease.Spec{Pool: racePool, Backend: lease.BackendVXLAN})
		if err != nil {
			return lease.Lease{}, err
		}
		return acquireB(b, n)
	})
	checkRecordKept(t, reg, rec.VNI)
}

// The other order: A has removed the record and is about to remove the VNI
// claim when B, holding the record as it read it before, takes a lease. B
// makes the record again with its VNI, and the claim stays with it.
func TestAcquireAfterRecordRemovedKeepsTheClaim(t *testing.T) {
	reg, rec := releaseRacingAcquire(t, "felt/vnis/", acquireB)
	checkRecordKept(t, reg, rec.VNI)
}

// hookedCAS runs hook once, just before the first CAS of a key with the
// given prefix at a non-zero index (an update, not a create).
type hookedCAS struct {
	kv.Store
	prefix string
	hook   func()
}

func (s *hookedCAS) CAS(ctx context.Context, key string, v []byte, index uint64) error {
	if h := s.hook; h != nil && index != 0 && strings.HasPrefix(key, s.prefix) {
		s.hook = nil
		h()
	}
	return s.Store.CAS(ctx, key, v, index)
}

// Host B completes a pool's record (claims a VNI) while host A removes that
// record (its RequestPool failed; no lease). B's write then fails and B
// makes the record afresh: with the VNI it had claimed, not the next one,
// which left the first claim behind for good, a VNI lost to every network.
func TestRecordRemovedUnderCompletionKeepsOneClaim(t *testing.T) {
	ctx := context.Background()
	store, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	hs := &hookedCAS{Store: store, prefix: "felt/networks/"}
	regA := lease.NewRegistry(store, "felt/", nil)
	regB := lease.NewRegistry(hs, "felt/", nil)
	pool := netip.MustParsePrefix("10.42.0.0/16")
	if _, err := regA.ReservePool(ctx, pool, 0); err != nil {
		t.Fatal(err)
	}
	hs.hook = func() {
		if err := regA.ForgetNetwork(ctx, pool); err != nil {
			t.Errorf("A: %v", err)
		}
	}
	n, err := regB.SettleNetwork(ctx, lease.Spec{Pool: pool, Backend: lease.BackendVXLAN})
	if err != nil {
		t.Fatal(err)
	}
	if hs.hook != nil {
		t.Fatal("the race was not staged")
	}
	claims, _, err := store.List(ctx, "felt/vnis/")
	if err != nil {
		t.Fatal(err)
	}
	if len(claims) != 1 || claims[0].Key != "felt/vnis/"+strconv.Itoa(n.VNI) {
		t.Fatalf("record with VNI %d; claims %v: want that one only", n.VNI, claims)
	}
}

// createHook runs hook once, just before the first create (CAS at index 0)
// of a key with the given prefix.
type createHook struct {
	kv.Store
	prefix string
	hook   func()
}

func (s *createHook) CAS(ctx context.Context, key string, v []byte, index uint64) error {
	if h := s.hook; h != nil && index == 0 && strings.HasPrefix(key, s.prefix) {
		s.hook = nil
		h()
	}
	return s.Store.CAS(ctx, key, v, index)
}

// Two hosts create overlapping pools at once (10.42.0.0/16 and
// 10.42.0.0/17): each checked for overlaps before the other's record
// existed. One of them must be refused; both used to be recorded.
func TestOverlappingPoolsCreatedAtOnceOneRefused(t *testing.T) {
	ctx := context.Background()
	store, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cs := &createHook{Store: store, prefix: "felt/networks/"}
	regA := lease.NewRegistry(store, "felt/", nil)
	regB := lease.NewRegistry(cs, "felt/", nil)
	var errA error
	cs.hook = func() { // A, after B's overlap check and before B's write
		_, errA = regA.SettleNetwork(ctx, lease.Spec{Pool: netip.MustParsePrefix("10.42.0.0/16")})
	}
	_, errB := regB.SettleNetwork(ctx, lease.Spec{Pool: netip.MustParsePrefix("10.42.0.0/17")})
	if cs.hook != nil {
		t.Fatal("the race was not staged")
	}
	nets, err := regA.ListNetworks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) > 1 {
		t.Fatalf("overlapping pools both recorded: %+v (A: %v, B: %v)", nets, errA, errB)
	}
	if errA == nil && errB == nil {
		t.Fatal("both creations succeeded")
	}
	for _, err := range []error{errA, errB} {
		if err != nil && !strings.Contains(err.Error(), "overlaps the pool") {
			t.Fatalf("error %v: want it to name the overlapping pool", err)
		}
	}
	if claims, _, _ := store.List(ctx, "felt/vnis/"); len(claims) != len(nets) {
		t.Fatalf("%d VNI claims for %d networks: %v", len(claims), len(nets), claims)
	}
}

// Many hosts creating, leasing from and releasing one network at once.
func TestChurnOnePool(t *testing.T) {
	r, _ := newRegistry(t)
	leasetest.ChurnOnePool(t, r, netip.MustParsePrefix("10.62.0.0/16"), 8, 30)
}

func TestChurnOnePoolInConsul(t *testing.T) {
	agent := consul.Start(t, consul.Options{})
	cfg := consulapi.DefaultConfig()
	cfg.Address = agent.Addr
	s, err := consulkv.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	leasetest.ChurnOnePool(t, lease.NewRegistry(s, "felt/", nil), netip.MustParsePrefix("10.62.0.0/16"), 8, 30)
}

// getHook runs hook once, just before the first Get of key.
type getHook struct {
	kv.Store
	key  string
	hook func()
}

func (s *getHook) Get(ctx context.Context, key string) (kv.Pair, error) {
	if h := s.hook; h != nil && key == s.key {
		s.hook = nil
		h()
	}
	return s.Store.Get(ctx, key)
}

// A VNI claim of the pool itself vanishes between the create that found it
// and the read that looks at it (the host that released the pool's last
// lease removed it): the VNI is free, and the record is made with it. It
// was refused as "already used by the felt network with pool" — the same
// pool; seen when many hosts churn one network (TestChurnOnePool).
func TestClaimVanishingUnderCreateIsTaken(t *testing.T) {
	ctx := context.Background()
	store, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	pool := netip.MustParsePrefix("10.42.0.0/16")
	if err := store.Put(ctx, "felt/vnis/7", []byte("10.42.0.0-16")); err != nil {
		t.Fatal(err)
	}
	gs := &getHook{Store: store, key: "felt/vnis/7"}
	gs.hook = func() {
		if err := store.Delete(ctx, "felt/vnis/7"); err != nil {
			t.Error(err)
		}
	}
	n, err := lease.NewRegistry(gs, "felt/", nil).SettleNetwork(ctx, lease.Spec{Pool: pool, Backend: lease.BackendVXLAN, VNI: 7})
	if err != nil || n.VNI != 7 {
		t.Fatalf("got %+v, %v; want the record made with vni 7", n, err)
	}
	if gs.hook != nil {
		t.Fatal("the race was not staged")
	}
	if p, err := store.Get(ctx, "felt/vnis/7"); err != nil || string(p.Value) != "10.42.0.0-16" {
		t.Fatalf("claim of vni 7: %q %v", p.Value, err)
	}
}
