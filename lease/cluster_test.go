package lease_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
)

// Cluster declarations in the network record (cluster.go), and what the
// rest of lease does with a declared record.

var poolB = netip.MustParsePrefix("10.43.0.0/16")

func decl(name, uid, by string) lease.Declaration {
	return lease.Declaration{Name: name, UID: uid, By: by}
}

// eachStoreKV is eachStore with the store under the registry, for tests
// that look at the claim keys themselves.
func eachStoreKV(t *testing.T, test func(t *testing.T, s kv.Store, r *lease.Registry)) {
	t.Run("embedded", func(t *testing.T) {
		s := newStore(t)
		test(t, s, lease.NewRegistry(s, "felt/", &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}))
	})
	t.Run("consul", func(t *testing.T) {
		s := consulStore(t)
		test(t, s, lease.NewRegistry(s, "felt/", nil))
	})
}

// claimOf returns the name claim of name as {pool, uid}, or "" if none.
func claimOf(t *testing.T, s kv.Store, name string) string {
	t.Helper()
	p, err := s.Get(context.Background(), "felt/names/"+name)
	if errors.Is(err, kv.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Pool string `json:"pool"`
		UID  string `json:"uid"`
	}
	if err := json.Unmarshal(p.Value, &c); err != nil {
		t.Fatalf("claim of %s: %q: %v", name, p.Value, err)
	}
	return c.Pool + " " + c.UID
}

// clusterOf returns the declaration in the record of p (nil: none), failing
// t if the record is gone.
func clusterOf(t *testing.T, r *lease.Registry, p netip.Prefix) *lease.Declaration {
	t.Helper()
	n, err := r.GetNetwork(context.Background(), p)
	if err != nil {
		t.Fatalf("record of %s: %v", p, err)
	}
	return n.Cluster
}

func reserve(t *testing.T, r *lease.Registry, pools ...netip.Prefix) {
	t.Helper()
	for _, p := range pools {
		if _, err := r.ReservePool(context.Background(), p, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// Declare writes the declaration into an existing record and claims its
// name; repeating it is a no-op; another declaration of the pool is
// ErrDeclared, naming the one there.
func TestDeclare(t *testing.T) {
	eachStoreKV(t, func(t *testing.T, s kv.Store, r *lease.Registry) {
		ctx := context.Background()
		d := decl("blue", "a1", "host-a")
		d.DriverOpts = map[string]string{"vni": "7"}
		d.Labels = map[string]string{"team": "x"}
		d.IPRange = netip.MustParsePrefix("10.42.1.0/24")
		d.Internal = true

		_, err := r.Declare(ctx, pool, d)
		if !errors.Is(err, kv.ErrNotFound) || !strings.Contains(err.Error(), "no network record") {
			t.Fatalf("declare without a record: %v; want kv.ErrNotFound", err)
		}
		if c := claimOf(t, s, "blue"); c != "" {
			t.Fatalf("a refused declaration left the claim %q", c)
		}

		reserve(t, r, pool)
		n, err := r.Declare(ctx, pool, d)
		if err != nil {
			t.Fatal(err)
		}
		got := n.Cluster
		if !got.Live() || got.Name != "blue" || got.UID != "a1" || got.By != "host-a" || got.At.IsZero() ||
			got.DriverOpts["vni"] != "7" || got.Labels["team"] != "x" || got.IPRange != d.IPRange || !got.Internal || got.Attachable {
			t.Fatalf("declared %+v", got)
		}
		if n.SubnetLen != 24 || n.Pool != pool {
			t.Fatalf("record %+v: the pool's fields changed", n)
		}
		if !reflect.DeepEqual(clusterOf(t, r, pool), got) {
			t.Fatalf("stored %+v, returned %+v", clusterOf(t, r, pool), got)
		}
		if c := claimOf(t, s, "blue"); c != "10.42.0.0/16 a1" {
			t.Fatalf("claim %q", c)
		}

		again, err := r.Declare(ctx, pool, d)
		if err != nil || !reflect.DeepEqual(again.Cluster, got) {
			t.Fatalf("declared again: %+v, %v; want the same declaration, no error", again.Cluster, err)
		}

		for _, other := range []lease.Declaration{decl("blue", "b2", "host-b"), decl("red", "b2", "host-b")} {
			_, err = r.Declare(ctx, pool, other)
			if !errors.Is(err, lease.ErrDeclared) || !strings.Contains(err.Error(), `"blue" by host host-a`) {
				t.Fatalf("declare %s over blue: %v; want ErrDeclared naming blue and host-a", other.Name, err)
			}
		}
		if c := claimOf(t, s, "red"); c != "" {
			t.Fatalf("a refused declaration left the claim %q", c)
		}
		if c := clusterOf(t, r, pool); !reflect.DeepEqual(c, got) {
			t.Fatalf("after refusals: %+v", c)
		}
	})
}

// Names that could leave the claim's key space, or that Docker would not
// take, are refused before anything is written; so are a UID that is not
// hex, a missing host, and an IP range outside the pool.
func TestDeclareInvalid(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	r := lease.NewRegistry(s, "felt/", nil)
	reserve(t, r, pool)
	before, _, _ := s.List(ctx, "felt/")
	withRange := decl("blue", "a1", "h")
	withRange.IPRange = netip.MustParsePrefix("10.50.0.0/24")
	wider := decl("blue", "a1", "h")
	wider.IPRange = netip.MustParsePrefix("10.0.0.0/8")
	for name, d := range map[string]lease.Declaration{
		"empty name":    decl("", "a1", "h"),
		"slash":         decl("a/b", "a1", "h"),
		"dotdot":        decl("..", "a1", "h"),
		"dot first":     decl(".x", "a1", "h"),
		"dash first":    decl("-x", "a1", "h"),
		"space":         decl("a b", "a1", "h"),
		"up":            decl("../../leases/x", "a1", "h"),
		"too long":      decl(strings.Repeat("a", 256), "a1", "h"),
		"no uid":        decl("blue", "", "h"),
		"uid not hex":   decl("blue", "xyz", "h"),
		"uid too long":  decl("blue", strings.Repeat("a", 65), "h"),
		"no host":       decl("blue", "a1", ""),
		"range outside": withRange,
		"range wider":   wider,
	} {
		if _, err := r.Declare(ctx, pool, d); !errors.Is(err, lease.ErrInvalidDeclaration) {
			t.Errorf("%s: %v; want ErrInvalidDeclaration", name, err)
		}
	}
	if after, _, _ := s.List(ctx, "felt/"); !reflect.DeepEqual(after, before) {
		t.Fatalf("refused declarations wrote: %v", after)
	}
	if _, err := r.Declare(ctx, pool, decl("Blue_1.x-2", "0123456789abcdefABCDEF", "h")); err != nil {
		t.Fatalf("a valid name: %v", err)
	}
	if _, err := r.Declare(ctx, poolB, decl(strings.Repeat("a", 255), "a2", "h")); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("255 characters: %v; want it accepted (and refused for the missing record)", err)
	}
}

// One name, two pools: the second declaration is ErrNameTaken, naming the
// pool holding it, until the first is withdrawn.
func TestDeclareNameTaken(t *testing.T) {
	eachStoreKV(t, func(t *testing.T, s kv.Store, r *lease.Registry) {
		ctx := context.Background()
		reserve(t, r, pool, poolB)
		if _, err := r.Declare(ctx, pool, decl("blue", "a1", "host-a")); err != nil {
			t.Fatal(err)
		}
		_, err := r.Declare(ctx, poolB, decl("blue", "b1", "host-b"))
		if !errors.Is(err, lease.ErrNameTaken) || !strings.Contains(err.Error(), "pool 10.42.0.0/16 by host host-a") {
			t.Fatalf("second blue: %v; want ErrNameTaken naming 10.42.0.0/16 and host-a", err)
		}
		if c := clusterOf(t, r, poolB); c != nil {
			t.Fatalf("refused, yet the record of %s carries %+v", poolB, c)
		}
		if c := claimOf(t, s, "blue"); c != "10.42.0.0/16 a1" {
			t.Fatalf("claim %q after the refusal", c)
		}
		if err := r.Withdraw(ctx, pool, "a1", "host-a"); err != nil {
			t.Fatal(err)
		}
		if c := claimOf(t, s, "blue"); c != "" {
			t.Fatalf("claim %q after the withdrawal", c)
		}
		if _, err := r.Declare(ctx, poolB, decl("blue", "b1", "host-b")); err != nil {
			t.Fatalf("blue after the first was withdrawn: %v", err)
		}
		reserve(t, r, pool) // withdrawn without leases: the record went
		_, err = r.Declare(ctx, pool, decl("blue", "a2", "host-a"))
		if !errors.Is(err, lease.ErrNameTaken) || !strings.Contains(err.Error(), "10.43.0.0/16") {
			t.Fatalf("blue again on the first pool: %v; want ErrNameTaken naming 10.43.0.0/16", err)
		}
	})
}

// A claim is valid only while its pool's record carries its declaration,
// live. Stale ones (a crash between claim and record; the record gone,
// withdrawn, or declared anew; an unreadable value) are taken over.
func TestDeclareTakesOverStaleClaim(t *testing.T) {
	for name, setup := range map[string]func(t *testing.T, r *lease.Registry) string{
		"crash before record": func(t *testing.T, r *lease.Registry) string {
			reserve(t, r, poolB)
			return `{"pool":"10.43.0.0/16","uid":"dead"}`
		},
		"record gone": func(t *testing.T, r *lease.Registry) string {
			return `{"pool":"10.43.0.0/16","uid":"dead"}`
		},
		"withdrawn": func(t *testing.T, r *lease.Registry) string {
			reserve(t, r, poolB)
			ctx := context.Background()
			if _, err := r.Declare(ctx, poolB, decl("green", "dead", "b")); err != nil {
				t.Fatal(err)
			}
			// The record keeps the tombstone (a lease), the claim is put back below.
			if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: mustGet(t, r, poolB), Owner: owner("b", "192.0.2.2")}); err != nil {
				t.Fatal(err)
			}
			if err := r.Withdraw(ctx, poolB, "dead", "b"); err != nil {
				t.Fatal(err)
			}
			return `{"pool":"10.43.0.0/16","uid":"dead"}`
		},
		"declared anew": func(t *testing.T, r *lease.Registry) string {
			reserve(t, r, poolB)
			if _, err := r.Declare(context.Background(), poolB, decl("green", "ee", "b")); err != nil {
				t.Fatal(err)
			}
			return `{"pool":"10.43.0.0/16","uid":"dead"}`
		},
		"own pool, earlier UID": func(t *testing.T, r *lease.Registry) string {
			return `{"pool":"10.42.0.0/16","uid":"dead"}`
		},
		"unreadable": func(t *testing.T, r *lease.Registry) string { return `garbage` },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t)
			r := lease.NewRegistry(s, "felt/", nil)
			reserve(t, r, pool)
			claim := setup(t, r)
			if err := s.Put(ctx, "felt/names/blue", []byte(claim)); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Declare(ctx, pool, decl("blue", "a1", "host-a")); err != nil {
				t.Fatalf("over the stale claim %s: %v", claim, err)
			}
			if c := claimOf(t, s, "blue"); c != "10.42.0.0/16 a1" {
				t.Fatalf("claim %q", c)
			}
		})
	}
}

func mustGet(t *testing.T, r *lease.Registry, p netip.Prefix) lease.Network {
	t.Helper()
	n, err := r.GetNetwork(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A declaration whose record write fails leaves no claim behind: the record
// removed under it (its CAS conflicts, the next read finds nothing), or the
// write failing outright.
func TestFailedDeclareLeavesNoClaim(t *testing.T) {
	ctx := context.Background()
	t.Run("record removed", func(t *testing.T) {
		s := newStore(t)
		hs := &hooked{Store: s, op: "CAS", when: updateUnder("felt/networks/")}
		other := lease.NewRegistry(s, "felt/", nil)
		r := lease.NewRegistry(hs, "felt/", nil)
		reserve(t, r, pool)
		hs.hook = func() {
			if err := other.ForgetNetwork(ctx, pool); err != nil {
				t.Error(err)
			}
		}
		_, err := r.Declare(ctx, pool, decl("blue", "a1", "host-a"))
		if hs.hook != nil {
			t.Fatal("the race was not staged")
		}
		if !errors.Is(err, kv.ErrNotFound) {
			t.Fatalf("declare over a removed record: %v; want kv.ErrNotFound", err)
		}
		if c := claimOf(t, s, "blue"); c != "" {
			t.Fatalf("claim %q left", c)
		}
	})
	t.Run("write fails", func(t *testing.T) {
		s := newStore(t)
		reserve(t, lease.NewRegistry(s, "felt/", nil), pool)
		r := lease.NewRegistry(failNetworkWrites{s}, "felt/", nil)
		if _, err := r.Declare(ctx, pool, decl("blue", "a1", "host-a")); err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("declare through a failing store: %v", err)
		}
		if c := claimOf(t, s, "blue"); c != "" {
			t.Fatalf("claim %q left", c)
		}
	})
}

// A declaration made again (same UID) after an older felt's rewrite dropped
// it from the record finds its claim in place. If that write fails, the
// claim stays: it was not this call's, and the cluster loop reads a missing
// claim as a withdrawal (HoldsName).
func TestFailedRedeclareKeepsItsClaim(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	r := lease.NewRegistry(s, "felt/", nil)
	reserve(t, r, pool)
	if _, err := r.Declare(ctx, pool, decl("blue", "a1", "host-a")); err != nil {
		t.Fatal(err)
	}
	rec, err := r.GetNetwork(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	rec.Cluster = nil // an older felt's rewrite
	val, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "felt/networks/10.42.0.0-16", val); err != nil {
		t.Fatal(err)
	}
	if c := clusterOf(t, r, pool); c != nil {
		t.Fatalf("the record still carries %+v", c)
	}
	failing := lease.NewRegistry(failNetworkWrites{s}, "felt/", nil)
	if _, err := failing.Declare(ctx, pool, decl("blue", "a1", "host-b")); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("declare through a failing store: %v", err)
	}
	if held, err := r.HoldsName(ctx, "blue", pool, "a1"); err != nil || !held {
		t.Fatalf("the claim of a1 went with a failed declaration of a1 again: held %v, %v (claim %q)", held, err, claimOf(t, s, "blue"))
	}
}

// Host A has claimed blue for its pool but not written its record yet when
// host B declares blue on another pool. A's claim looks stale to B (A's
// record carries nothing yet), so B takes it over, but fences A's record
// first: A's record write then fails, A looks again and finds the name
// taken. Without the fence both would have declared blue.
//
// On each store: Consul keeps the ModifyIndex of a write that changes
// nothing, so the fence must change the record's bytes (touch).
func TestDeclareRaceBetweenClaimAndRecord(t *testing.T) {
	eachStoreKV(t, testDeclareRaceBetweenClaimAndRecord)
}

func testDeclareRaceBetweenClaimAndRecord(t *testing.T, s kv.Store, _ *lease.Registry) {
	ctx := context.Background()
	hs := &hooked{Store: s, op: "CAS", when: updateUnder("felt/networks/")}
	regA := lease.NewRegistry(hs, "felt/", nil)
	regB := lease.NewRegistry(s, "felt/", nil)
	reserve(t, regB, pool, poolB)
	var errB error
	hs.hook = func() {
		if claimOf(t, s, "blue") != "10.42.0.0/16 a1" {
			t.Error("A's record write before its claim")
		}
		_, errB = regB.Declare(ctx, poolB, decl("blue", "b1", "host-b"))
	}
	_, errA := regA.Declare(ctx, pool, decl("blue", "a1", "host-a"))
	if hs.hook != nil {
		t.Fatal("the race was not staged")
	}
	if errB != nil || !errors.Is(errA, lease.ErrNameTaken) {
		t.Fatalf("A: %v, B: %v; want B declared and A ErrNameTaken", errA, errB)
	}
	if c := clusterOf(t, regB, pool); c != nil {
		t.Fatalf("A's record carries %+v", c)
	}
	if c := claimOf(t, s, "blue"); c != "10.43.0.0/16 b1" {
		t.Fatalf("claim %q", c)
	}
}

// Hosts declaring one name on as many pools at once: exactly one wins, the
// others get ErrNameTaken, and the claim names the winner. Over a fresh
// name, and over a stale claim (every host takes the takeover path).
func TestConcurrentDeclareOneWins(t *testing.T) {
	eachStoreKV(t, func(t *testing.T, s kv.Store, r *lease.Registry) {
		ctx := context.Background()
		const hosts = 6
		pools := make([]netip.Prefix, hosts)
		for i := range pools {
			pools[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + i), 0, 0}), 16)
		}
		reserve(t, r, pools...)
		stale := netip.MustParsePrefix("10.99.0.0/16")
		reserve(t, r, stale)
		if err := s.Put(ctx, "felt/names/green", []byte(`{"pool":"10.99.0.0/16","uid":"dead"}`)); err != nil {
			t.Fatal(err)
		}
		// Rounds: the interleavings differ from run to run; 20 found a
		// missing fence on Consul in every run.
		names := []string{"green"}
		for i := range 20 {
			names = append(names, fmt.Sprintf("blue%d", i))
		}
		for _, name := range names {
			errs := make([]error, hosts)
			var wg sync.WaitGroup
			for i := range hosts {
				wg.Go(func() {
					_, errs[i] = r.Declare(ctx, pools[i], decl(name, fmt.Sprintf("%s%d", hexOf(name), i), fmt.Sprintf("host-%d", i)))
				})
			}
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Fatalf("%s: hosts %d and %d both declared it", name, winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, lease.ErrNameTaken):
					t.Fatalf("%s: host %d: %v; want ErrNameTaken or success", name, i, err)
				}
			}
			if winner < 0 {
				t.Fatalf("%s: nobody declared it: %v", name, errs)
			}
			live := 0
			for _, p := range pools {
				if c := clusterOf(t, r, p); c.Live() && c.Name == name {
					live++
				}
			}
			if live != 1 {
				t.Fatalf("%s: %d records declare it", name, live)
			}
			if c, want := claimOf(t, s, name), fmt.Sprintf("%s %s%d", pools[winner], hexOf(name), winner); c != want {
				t.Fatalf("%s: claim %q, want %q", name, c, want)
			}
			// Free the pools for the next name.
			if err := r.Withdraw(ctx, pools[winner], fmt.Sprintf("%s%d", hexOf(name), winner), "test"); err != nil {
				t.Fatal(err)
			}
			reserve(t, r, pools[winner]) // withdrawn without leases: the record went
		}
	})
}

func hexOf(name string) string { return fmt.Sprintf("%x", name) }

// A withdrawn declaration is not declared again under its UID.
func TestDeclareWithdrawnUID(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Declare(ctx, pool, decl("blue", "a1", "host-a")); err != nil {
		t.Fatal(err)
	}
	if err := r.Withdraw(ctx, pool, "a1", "host-b"); err != nil {
		t.Fatal(err)
	}
	_, err = r.Declare(ctx, pool, decl("blue", "a1", "host-a"))
	if !errors.Is(err, lease.ErrWithdrawn) || !strings.Contains(err.Error(), "withdrawn by host host-b") {
		t.Fatalf("declare a withdrawn UID: %v; want ErrWithdrawn", err)
	}
	// A new UID replaces the tombstone.
	if _, err := r.Declare(ctx, pool, decl("blue", "a2", "host-a")); err != nil {
		t.Fatalf("declare over a tombstone: %v", err)
	}
	if c := clusterOf(t, r, pool); !c.Live() || c.UID != "a2" {
		t.Fatalf("after declaring over the tombstone: %+v", c)
	}
}

// Withdraw tombstones the declaration (host, registry clock) and drops the
// claim; the record stays while a lease does, and goes, VNI claim with it,
// with the last one. A Withdraw of another UID, of a record gone, or
// repeated, changes nothing.
func TestWithdraw(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := lease.NewRegistry(s, "felt/", clk)
	n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, Backend: "vxlan"})
	if err != nil || n.VNI == 0 {
		t.Fatalf("%+v %v", n, err)
	}
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Declare(ctx, pool, decl("blue", "a1", "host-a")); err != nil {
		t.Fatal(err)
	}
	if err := r.Withdraw(ctx, pool, "ff", "host-b"); err != nil || !clusterOf(t, r, pool).Live() {
		t.Fatalf("withdrawing another UID: %v, %+v", err, clusterOf(t, r, pool))
	}
	if err := r.Withdraw(ctx, pool, "a1", ""); err == nil {
		t.Fatal("withdrawn without a host ID")
	}
	clk.Add(time.Minute)
	if err := r.Withdraw(ctx, pool, "a1", "host-b"); err != nil {
		t.Fatal(err)
	}
	c := clusterOf(t, r, pool)
	if c.Live() || c.Removed.By != "host-b" || !c.Removed.At.Equal(clk.Now()) || c.Name != "blue" || c.By != "host-a" {
		t.Fatalf("tombstone %+v (removed %+v)", c, c.Removed)
	}
	if cl := claimOf(t, s, "blue"); cl != "" {
		t.Fatalf("claim %q after the withdrawal", cl)
	}
	if err := r.Withdraw(ctx, pool, "a1", "host-c"); err != nil || clusterOf(t, r, pool).Removed.By != "host-b" {
		t.Fatalf("withdrawn twice: %v, %+v", err, clusterOf(t, r, pool).Removed)
	}
	if err := r.Withdraw(ctx, poolB, "a1", "host-b"); err != nil {
		t.Fatalf("withdraw on a pool without record: %v", err)
	}
	// The tombstone goes with the last lease, as any record.
	if err := r.Release(ctx, pool, l.Subnet, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetNetwork(ctx, pool); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("tombstoned record after its last lease: %v", err)
	}
	if _, err := s.Get(ctx, fmt.Sprintf("felt/vnis/%d", n.VNI)); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("VNI claim after the record: %v", err)
	}

	// Without leases, Withdraw removes the record at once.
	n, err = r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: poolB, Backend: "vxlan"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Declare(ctx, poolB, decl("red", "b1", "host-b")); err != nil {
		t.Fatal(err)
	}
	if err := r.Withdraw(ctx, poolB, "b1", "host-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetNetwork(ctx, poolB); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("withdrawn record without leases: %v", err)
	}
	if _, err := s.Get(ctx, fmt.Sprintf("felt/vnis/%d", n.VNI)); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("VNI claim of the withdrawn record: %v", err)
	}
	if cl := claimOf(t, s, "red"); cl != "" {
		t.Fatalf("claim %q", cl)
	}
}

// Every path that removes a network record keeps a declared one, with its
// VNI claim: the last release, ForgetNetwork (a refused RequestPool), and
// leases expiring (RemoveExpired, or Acquire removing them).
func TestDeclaredRecordOutlivesLeases(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := lease.NewRegistry(s, "felt/", clk)
	n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, Backend: "vxlan"})
	if err != nil {
		t.Fatal(err)
	}
	want, err := r.Declare(ctx, pool, decl("blue", "a1", "host-a"))
	if err != nil {
		t.Fatal(err)
	}
	check := func(step string) {
		t.Helper()
		got, err := r.GetNetwork(ctx, pool)
		if err != nil || !reflect.DeepEqual(got.Cluster, want.Cluster) || got.VNI != n.VNI {
			t.Fatalf("after %s: %+v, %v; want the declared record with vni %d", step, got, err, n.VNI)
		}
		if _, err := s.Get(ctx, fmt.Sprintf("felt/vnis/%d", n.VNI)); err != nil {
			t.Fatalf("after %s: VNI claim: %v", step, err)
		}
	}
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1")})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Release(ctx, pool, l.Subnet, "a"); err != nil {
		t.Fatal(err)
	}
	check("the last release")
	if err := r.ForgetNetwork(ctx, pool); err != nil {
		t.Fatal(err)
	}
	check("ForgetNetwork")

	if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("dead", "192.0.2.9"), TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	all, _ := r.AllLeases(ctx)
	if got := r.RemoveExpired(ctx, all); got != 1 {
		t.Fatalf("RemoveExpired removed %d, want 1", got)
	}
	if err := r.ForgetNetwork(ctx, pool); err != nil {
		t.Fatal(err)
	}
	check("the last lease expired")

	// A settled pool's record rewritten by the pool's next host, a lease
	// expiring under Acquire, then released.
	dead, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("dead", "192.0.2.9"), TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	// b asks for the dead host's subnet: an Acquire removes the expired
	// leases it meets (it lists the pool no more).
	l, err = r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("b", "192.0.2.2"), Prefer: dead.Subnet})
	if err != nil {
		t.Fatal(err)
	}
	if ls, _ := r.Leases(ctx, pool); len(ls) != 1 {
		t.Fatalf("leases %v; want only b's", subnets(ls))
	}
	if err := r.Release(ctx, pool, l.Subnet, "b"); err != nil {
		t.Fatal(err)
	}
	check("Acquire removed an expired lease, then the last release")
}

// The record writes other than Declare and Withdraw keep the declaration:
// a lease (which checks the record, not writes it), SettleNetwork settling the rest
// of the record, ReservePool, Renew.
func TestDeclarationSurvivesRecordWrites(t *testing.T) {
	ctx := context.Background()
	r, clk := newRegistry(t)
	reserve(t, r, pool)
	d := decl("blue", "a1", "host-a")
	d.DriverOpts = map[string]string{"backend": "vxlan"}
	d.Attachable = true
	want, err := r.Declare(ctx, pool, d)
	if err != nil {
		t.Fatal(err)
	}
	if !want.Cluster.At.Equal(clk.Now()) {
		t.Fatalf("declared at %v; want the registry clock's %v", want.Cluster.At, clk.Now())
	}
	check := func(step string) lease.Network {
		t.Helper()
		got, err := r.GetNetwork(ctx, pool)
		if err != nil || !reflect.DeepEqual(got.Cluster, want.Cluster) {
			t.Fatalf("after %s: %+v, %v; want the declaration %+v", step, got.Cluster, err, want.Cluster)
		}
		return got
	}
	n, err := r.ReservePool(ctx, pool, 24)
	if err != nil {
		t.Fatal(err)
	}
	check("ReservePool")
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	check("Acquire")
	settled, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool, Backend: "vxlan", MTU: 1400})
	if err != nil || settled.VNI == 0 {
		t.Fatalf("%+v %v", settled, err)
	}
	if got := check("SettleNetwork"); got.Backend != "vxlan" || got.MTU != 1400 {
		t.Fatalf("settled %+v", got)
	}
	if _, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool}); err != nil {
		t.Fatal(err)
	}
	check("SettleNetwork adopting the record")
	if _, err := r.Renew(ctx, lease.RenewRequest{Network: settled, Subnet: l.Subnet, Owner: owner("a", "192.0.2.1"), TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	check("Renew")
}

// The record stays readable both ways: one without "cluster" (written by
// an older felt) decodes with no declaration, and one with it keeps every
// key an older felt reads, where it was.
func TestNetworkRecordWireCompatible(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	r := lease.NewRegistry(s, "felt/", nil)
	old := `{"pool":"10.42.0.0/16","subnetLen":24,"backend":"vxlan","vni":1,"mtu":1400,"port":4789}`
	if err := s.Put(ctx, "felt/networks/10.42.0.0-16", []byte(old)); err != nil {
		t.Fatal(err)
	}
	n, err := r.GetNetwork(ctx, pool)
	if err != nil || n.Cluster != nil || n.Backend != "vxlan" || n.VNI != 1 || n.MTU != 1400 || n.Port != 4789 {
		t.Fatalf("old record: %+v, %v", n, err)
	}
	d := decl("blue", "a1", "host-a")
	d.At = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d.DriverOpts = map[string]string{"vni": "1"}
	d.IPAMOpts = map[string]string{"subnet_len": "24"}
	d.Labels = map[string]string{"team": "x"}
	d.IPRange = netip.MustParsePrefix("10.42.1.0/24")
	d.Internal = true
	if _, err := r.Declare(ctx, pool, d); err != nil {
		t.Fatal(err)
	}
	p, err := s.Get(ctx, "felt/networks/10.42.0.0-16")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"pool":"10.42.0.0/16","subnetLen":24,"backend":"vxlan","vni":1,"mtu":1400,"port":4789,` +
		`"cluster":{"uid":"a1","name":"blue","driverOpts":{"vni":"1"},"ipamOpts":{"subnet_len":"24"},"labels":{"team":"x"},` +
		`"ipRange":"10.42.1.0/24","internal":true,"by":"host-a","at":"2026-01-01T00:00:00Z"}}`
	if string(p.Value) != want {
		t.Fatalf("declared record:\n%s\nwant\n%s", p.Value, want)
	}
	// What felt before cluster networks decoded the record into.
	var before struct {
		Pool          netip.Prefix `json:"pool"`
		SubnetLen     int          `json:"subnetLen"`
		Backend       string       `json:"backend,omitempty"`
		VNI           int          `json:"vni,omitempty"`
		MTU           int          `json:"mtu,omitempty"`
		DirectRouting bool         `json:"directRouting,omitempty"`
		Port          int          `json:"port,omitempty"`
	}
	if err := json.Unmarshal(p.Value, &before); err != nil || before.Pool != pool || before.SubnetLen != 24 || before.Backend != "vxlan" || before.VNI != 1 || before.MTU != 1400 || before.Port != 4789 {
		t.Fatalf("an older felt reads %+v, %v", before, err)
	}
	// A lease keeps the tombstoned record (without, it goes at once). It
	// does not write the record (its transaction checks the record's
	// index, the fence against deleteNetwork): bytes and index stay.
	if _, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	before1 := p.ModifyIndex
	p, _ = s.Get(ctx, "felt/networks/10.42.0.0-16")
	if string(p.Value) != want || p.ModifyIndex != before1 {
		t.Fatalf("after a lease (index %d, was %d):\n%q\nwant\n%q", p.ModifyIndex, before1, p.Value, want)
	}
	if err := json.Unmarshal(p.Value, &before); err != nil || before.VNI != 1 {
		t.Fatalf("an older felt reads %+v, %v", before, err)
	}
	if err := r.Withdraw(ctx, pool, "a1", "host-b"); err != nil {
		t.Fatal(err)
	}
	p, _ = s.Get(ctx, "felt/networks/10.42.0.0-16")
	if !regexp.MustCompile(`"at":"2026-01-01T00:00:00Z","removed":\{"by":"host-b","at":"[^"]+"\}\}\}$`).Match(p.Value) {
		t.Fatalf("tombstoned record %s", p.Value)
	}
}

// Epoch makes one random 128-bit ID per store, whoever asks first (hosts
// asking at once all get the winner's), and a new one once the store lost
// it.
func TestEpoch(t *testing.T) {
	eachStoreKV(t, func(t *testing.T, s kv.Store, r *lease.Registry) {
		ctx := context.Background()
		got := make([]string, 6)
		errs := make([]error, len(got))
		var wg sync.WaitGroup
		for i := range got {
			wg.Go(func() { got[i], errs[i] = r.Epoch(ctx) })
		}
		wg.Wait()
		for i := range got {
			if errs[i] != nil || got[i] != got[0] {
				t.Fatalf("epochs %v, %v; want one", got, errs)
			}
		}
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got[0]) {
			t.Fatalf("epoch %q; want 32 hex digits", got[0])
		}
		if p, err := s.Get(ctx, "felt/cluster-epoch"); err != nil || string(p.Value) != got[0] {
			t.Fatalf("stored %q, %v", p.Value, err)
		}
		if again, err := r.Epoch(ctx); err != nil || again != got[0] {
			t.Fatalf("asked again: %q, %v", again, err)
		}
		if _, err := r.DeleteAll(ctx); err != nil {
			t.Fatal(err)
		}
		if fresh, err := r.Epoch(ctx); err != nil || fresh == got[0] {
			t.Fatalf("after the store was wiped: %q, %v; want a new epoch", fresh, err)
		}
	})
}

// WatchNetworks answers at once for index 0, then blocks until a record
// changes: a declaration wakes it.
func TestWatchNetworks(t *testing.T) {
	eachStore(t, func(t *testing.T, r *lease.Registry) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		reserve(t, r, pool)
		index, err := r.WatchNetworks(ctx, 0)
		if err != nil || index == 0 {
			t.Fatalf("first watch: index %d, %v; want > 0 at once", index, err)
		}
		type watched struct {
			index uint64
			err   error
		}
		ch := make(chan watched, 1)
		go func() {
			i, err := r.WatchNetworks(ctx, index)
			ch <- watched{i, err}
		}()
		select {
		case w := <-ch:
			t.Fatalf("watch returned %d, %v without any change", w.index, w.err)
		case <-time.After(300 * time.Millisecond):
		}
		if _, err := r.Declare(ctx, pool, decl("blue", "a1", "host-a")); err != nil {
			t.Fatal(err)
		}
		if w := <-ch; w.err != nil || w.index <= index {
			t.Fatalf("after the declaration: index %d (before %d), %v", w.index, index, w.err)
		}
	})
}

func TestWatchNetworksIndexBackwards(t *testing.T) {
	r := lease.NewRegistry(rewound{newStore(t)}, "felt/", nil)
	if index, err := r.WatchNetworks(context.Background(), 100); err != nil || index != 0 {
		t.Fatalf("index %d, %v; want 0", index, err)
	}
}
