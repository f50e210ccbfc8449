package lease_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
	"github.com/felt-net/felt/testkit/consul"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func newRegistry(t *testing.T) (*lease.Registry, *fakeClock) {
	t.Helper()
	s, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return lease.NewRegistry(s, "felt/", clk), clk
}

var pool = netip.MustParsePrefix("10.42.0.0/16")

func owner(id, ip string) lease.Owner {
	return lease.Owner{HostID: id, PublicIP: netip.MustParseAddr(ip)}
}

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
	n, err = r.SettleNetwork(ctx, lease.Spec{Pool: pool, Backend: "host-gw"})
	if err != nil {
		t.Fatal(err)
	}
	if n.Backend != "host-gw" || n.VNI != 0 {
		t.Fatalf("got %+v, want host-gw without VNI", n)
	}
	// A second host without options adopts the record.
	if n2, err := r.SettleNetwork(ctx, lease.Spec{Pool: pool}); err != nil || n2.Backend != "host-gw" {
		t.Fatalf("adopt: %+v %v", n2, err)
	}
	_, err = r.SettleNetwork(ctx, lease.Spec{Pool: pool, Backend: "vxlan"})
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
	a, err := r.SettleNetwork(ctx, lease.Spec{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.SettleNetwork(ctx, lease.Spec{Pool: netip.MustParsePrefix("10.43.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	if a.VNI == 0 || b.VNI == 0 || a.VNI == b.VNI {
		t.Fatalf("VNIs %d and %d: want distinct non-zero", a.VNI, b.VNI)
	}
	_, err = r.SettleNetwork(ctx, lease.Spec{Pool: netip.MustParsePrefix("10.44.0.0/16"), VNI: a.VNI})
	if err == nil || !strings.Contains(err.Error(), "already used by the felt network with pool 10.42.0.0/16") {
		t.Fatalf("error = %v", err)
	}
}

func TestAcquireReusesAndExpires(t *testing.T) {
	ctx := context.Background()
	r, clk := newRegistry(t)
	n, _ := r.SettleNetwork(ctx, lease.Spec{Pool: pool})
	a, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.10"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if a.Subnet.Bits() != 24 || !pool.Contains(a.Subnet.Addr()) {
		t.Fatalf("subnet %s not a /24 of %s", a.Subnet, pool)
	}
	// Same host, new IP: same subnet, updated in place.
	again, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.99"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if again.Subnet != a.Subnet || again.PublicIP.String() != "192.0.2.99" {
		t.Fatalf("re-acquire: got %s %s, want %s with the new IP", again.Subnet, again.PublicIP, a.Subnet)
	}
	// Another host asking for a's subnet does not get it while it is live...
	b, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("b", "192.0.2.11"), TTL: time.Hour, Prefer: a.Subnet})
	if err != nil {
		t.Fatal(err)
	}
	if b.Subnet == a.Subnet {
		t.Fatal("two hosts hold the same subnet")
	}
	// ...but does once a's lease expired.
	clk.Add(2 * time.Hour)
	c, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("c", "192.0.2.12"), TTL: time.Hour, Prefer: a.Subnet})
	if err != nil {
		t.Fatal(err)
	}
	if c.Subnet != a.Subnet {
		t.Fatalf("expired subnet not reused: got %s want %s", c.Subnet, a.Subnet)
	}
}

func TestAcquireWithinRange(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	n, _ := r.SettleNetwork(ctx, lease.Spec{Pool: pool})
	within := netip.MustParsePrefix("10.42.7.128/25")
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.10"), Within: within})
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet.String() != "10.42.7.0/24" {
		t.Fatalf("got %s, want the /24 holding the range", l.Subnet)
	}
}

func TestExhaustion(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	small := netip.MustParsePrefix("10.50.0.0/23")
	n, _ := r.SettleNetwork(ctx, lease.Spec{Pool: small})
	for i, h := range []string{"a", "b"} {
		if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(h, fmt.Sprintf("192.0.2.%d", i+1))}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("c", "192.0.2.3")})
	if err == nil || !strings.Contains(err.Error(), "no free /24 subnet left") {
		t.Fatalf("error = %v", err)
	}
}

// Many hosts racing: every one gets a subnet and no two get the same.
func TestConcurrentAcquireNoDuplicates(t *testing.T) {
	r, _ := newRegistry(t)
	leasetest.RaceAcquire(t, r, netip.MustParsePrefix("10.60.0.0/19"), 20) // 32 subnets
}

func TestReleaseLastLeaseRemovesNetwork(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	n, _ := r.SettleNetwork(ctx, lease.Spec{Pool: pool, Backend: "host-gw"})
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
	if _, err := r.SettleNetwork(ctx, lease.Spec{Pool: pool, Backend: "vxlan"}); err != nil {
		t.Fatal(err)
	}
}

// Picking a subnet of a huge pool (a /8 in /30s: four million subnets; a /1:
// half a billion) costs memory in proportion to the leases, not to the
// subnets: it used to list every free candidate (hundreds of MB for the /8,
// out of memory for the /1).
func TestAcquireMemoryIndependentOfPoolSize(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	for i, p := range []string{"10.0.0.0/8", "128.0.0.0/1"} {
		pool := netip.MustParsePrefix(p)
		n, err := r.SettleNetwork(ctx, lease.Spec{Pool: pool, SubnetLen: 30})
		if err != nil {
			t.Fatal(err)
		}
		for j := range 3 {
			if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(fmt.Sprintf("warm-%d-%d", i, j), fmt.Sprintf("192.0.2.%d", 10*i+j+1))}); err != nil {
				t.Fatal(err)
			}
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(fmt.Sprintf("h-%d", i), fmt.Sprintf("192.0.2.%d", 100+i))})
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
			t.Fatalf("pool %s in /30s: one Acquire allocated %d bytes, want under 4 MiB", pool, got)
		}
		if l.Subnet.Bits() != 30 || !pool.Contains(l.Subnet.Addr()) {
			t.Fatalf("got %s, want a /30 of %s", l.Subnet, pool)
		}
	}
}

// The choice among free subnets stays random (hosts starting together
// rarely collide) and skips taken ones, and a preferred free subnet wins.
func TestAcquireRandomAmongFree(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	n, _ := r.SettleNetwork(ctx, lease.Spec{Pool: netip.MustParsePrefix("10.50.0.0/20")}) // 16 subnets
	seen := map[netip.Prefix]bool{}
	for i := range 16 {
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(fmt.Sprint("h", i), fmt.Sprintf("192.0.2.%d", i+1))})
		if err != nil {
			t.Fatal(err)
		}
		if seen[l.Subnet] {
			t.Fatalf("%s handed out twice", l.Subnet)
		}
		seen[l.Subnet] = true
	}
	ls, _ := r.Leases(ctx, n.Pool)
	first := ls[0].Subnet
	if err := r.Release(ctx, n.Pool, first, ls[0].HostID); err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("late", "192.0.2.99"), Prefer: netip.MustParsePrefix("10.50.3.0/24")})
	if err != nil || l.Subnet != first {
		t.Fatalf("got %s (%v), want the only free subnet %s", l.Subnet, err, first)
	}
	// Lowest-first would always give 10.50.0.0/24 to a first host.
	firsts := map[netip.Prefix]bool{}
	for i := range 20 {
		r, _ := newRegistry(t)
		n, _ := r.SettleNetwork(ctx, lease.Spec{Pool: netip.MustParsePrefix("10.50.0.0/16")})
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(fmt.Sprint("h", i), "192.0.2.1")})
		if err != nil {
			t.Fatal(err)
		}
		firsts[l.Subnet] = true
	}
	if len(firsts) < 2 {
		t.Fatalf("20 first hosts all got %v: the choice is not random", firsts)
	}
}

func TestReincarnationTakesOverLease(t *testing.T) {
	r, _ := newRegistry(t)
	leasetest.Reincarnation(t, r, netip.MustParsePrefix("10.61.0.0/16"))
}

func TestReincarnationTakesOverLeaseInConsul(t *testing.T) {
	agent := consul.Start(t, consul.Options{})
	cfg := consulapi.DefaultConfig()
	cfg.Address = agent.Addr
	s, err := consulkv.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	leasetest.Reincarnation(t, lease.NewRegistry(s, "felt/", nil), netip.MustParsePrefix("10.61.0.0/16"))
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
	s, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	r := lease.NewRegistry(failNetworkWrites{s}, "felt/", nil)
	if _, err := r.SettleNetwork(ctx, lease.Spec{Pool: pool}); err == nil {
		t.Fatal("network record written through a failing store")
	}
	if pairs, _, _ := s.List(ctx, "felt/"); len(pairs) != 0 {
		t.Fatalf("left behind: %v", pairs)
	}
}

// A lease this Acquire wrote is taken back when Acquire fails after it (the
// network record's rewrite fails): the caller sees an error and holds
// nothing, so nothing would ever release the lease (with TTL 0, never).
func TestFailedAcquireLeavesNoLease(t *testing.T) {
	ctx := context.Background()
	s, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	n, err := lease.NewRegistry(s, "felt/", nil).SettleNetwork(ctx, lease.Spec{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	r := lease.NewRegistry(failNetworkWrites{s}, "felt/", nil)
	if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1")}); err == nil {
		t.Fatal("Acquire succeeded though the network record could not be written")
	}
	if ls, err := r.Leases(ctx, pool); err != nil || len(ls) != 0 {
		t.Fatalf("leases left behind by a failed Acquire: %+v %v", ls, err)
	}
}
