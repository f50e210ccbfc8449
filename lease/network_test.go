package lease_test

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
)

func TestReserveAndSettleNetworkDefaultsAndConflicts(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	n, err := r.ReservePool(ctx, pool, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n.SubnetLen != 24 || n.Backend != "" {
		t.Fatalf("after RequestPool: got %+v, want subnetLen 24 and no backend yet", n)
	}
	n, err = r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, Backend: "host-gw"})
	if err != nil {
		t.Fatal(err)
	}
	if n.Backend != "host-gw" || n.VNI != 0 {
		t.Fatalf("got %+v, want host-gw without VNI", n)
	}
	// A second host without options adopts the record.
	if n2, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool}); err != nil || n2.Backend != "host-gw" {
		t.Fatalf("adopt: %+v %v", n2, err)
	}
	_, err = r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, Backend: "vxlan"})
	if err == nil || !strings.Contains(err.Error(), "recorded with backend=host-gw") || !strings.Contains(err.Error(), "backend=vxlan") {
		t.Fatalf("conflict error = %v", err)
	}
	_, err = r.ReservePool(ctx, pool, 26)
	if err == nil || !strings.Contains(err.Error(), "subnet_len=24") {
		t.Fatalf("subnet_len conflict error = %v", err)
	}
}

func TestOverlappingPoolRefused(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	if _, err := r.ReservePool(ctx, pool, 0); err != nil {
		t.Fatal(err)
	}
	_, err := r.ReservePool(ctx, netip.MustParsePrefix("10.42.128.0/17"), 0)
	if err == nil || !strings.Contains(err.Error(), "overlaps the pool 10.42.0.0/16") {
		t.Fatalf("error = %v", err)
	}
}

func TestVNIsAreDistinctAndExplicitCollisionRefused(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	a, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: netip.MustParsePrefix("10.43.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	if a.VNI == 0 || b.VNI == 0 || a.VNI == b.VNI {
		t.Fatalf("VNIs %d and %d: want distinct non-zero", a.VNI, b.VNI)
	}
	_, err = r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: netip.MustParsePrefix("10.44.0.0/16"), VNI: a.VNI})
	if err == nil || !strings.Contains(err.Error(), "already used by the felt network with pool 10.42.0.0/16") {
		t.Fatalf("error = %v", err)
	}
}

// failNetworkWrites fails every write of a network record.
type failNetworkWrites struct{ kv.Store }

func (s failNetworkWrites) CAS(ctx context.Context, key string, v []byte, index uint64) error {
	if strings.Contains(key, "/networks/") {
		return errors.New("injected")
	}
	return s.Store.CAS(ctx, key, v, index)
}

// A network record that cannot be written leaves no VNI claim behind (the
// VNI would be lost to every later network).
func TestFailedNetworkWriteReleasesVNI(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	r := lease.NewRegistry(failNetworkWrites{s}, "felt/", nil)
	if _, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool}); err == nil {
		t.Fatal("network record written through a failing store")
	}
	if pairs, _, _ := s.List(ctx, "felt/"); len(pairs) != 0 {
		t.Fatalf("left behind: %v", pairs)
	}
}

// Host B completes a pool's record (claims a VNI) while host A removes that
// record (its RequestPool failed; no lease). B's write then fails and B
// makes the record afresh: with the VNI it had claimed, not the next one,
// which left the first claim behind for good, a VNI lost to every network.
func TestRecordRemovedUnderCompletionKeepsOneClaim(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	hs := &hooked{Store: store, op: "CAS", when: updateUnder("felt/networks/")}
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
	n, err := regB.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, Backend: "vxlan"})
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

// Two hosts create overlapping pools at once (10.42.0.0/16 and
// 10.42.0.0/17): each checked for overlaps before the other's record
// existed. One of them must be refused; both used to be recorded.
func TestOverlappingPoolsCreatedAtOnceOneRefused(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	cs := &hooked{Store: store, op: "CAS", when: createUnder("felt/networks/")}
	regA := lease.NewRegistry(store, "felt/", nil)
	regB := lease.NewRegistry(cs, "felt/", nil)
	var errA error
	cs.hook = func() { // A, after B's overlap check and before B's write
		_, errA = regA.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: netip.MustParsePrefix("10.42.0.0/16")})
	}
	_, errB := regB.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: netip.MustParsePrefix("10.42.0.0/17")})
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

// A VNI claim of the pool itself vanishes between the create that found it
// and the read that looks at it (the host that released the pool's last
// lease removed it): the VNI is free, and the record is made with it. It
// was refused as "already used by the felt network with pool" — the same
// pool; seen when many hosts churn one network (TestChurnOnePool).
func TestClaimVanishingUnderCreateIsTaken(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	pool := netip.MustParsePrefix("10.42.0.0/16")
	if err := store.Put(ctx, "felt/vnis/7", []byte("10.42.0.0-16")); err != nil {
		t.Fatal(err)
	}
	gs := &hooked{Store: store, op: "Get", when: exactly("felt/vnis/7")}
	gs.hook = func() {
		if err := store.Delete(ctx, "felt/vnis/7"); err != nil {
			t.Error(err)
		}
	}
	n, err := lease.NewRegistry(gs, "felt/", nil).SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, Backend: "vxlan", VNI: 7})
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

// A VNI given without -o backend to a network recorded with a backend that
// takes none (host-gw) is recorded but claims nothing, as before backends
// had a registry: the VNI stays free for a vxlan network.
func TestVNIOnNetworkWithoutVNIBackendClaimsNothing(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	if _, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, Backend: "host-gw"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, VNI: 100}); err != nil {
		t.Fatal(err)
	}
	other := netip.MustParsePrefix("10.99.0.0/16")
	if n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: other, Backend: "vxlan", VNI: 100}); err != nil || n.VNI != 100 {
		t.Fatalf("vxlan network with vni=100: %+v, %v (the host-gw network took the VNI)", n, err)
	}
}
