package lease

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/felt-net/felt/internal/ipnet"
)

// checkPlan asserts a plan's properties for pools: within budget (or one
// bucket a pool), buckets disjoint (no prefix of another), and every
// key a lease of the pool can have, of any length, in exactly one bucket
// (all the keys of small pools, a sample of big ones). It returns the
// number of buckets.
func checkPlan(t *testing.T, pools []netip.Prefix, plan [][]string, budget int) int {
	t.Helper()
	total := 0
	for i, pool := range pools {
		buckets := plan[i]
		total += len(buckets)
		if len(buckets) == 0 {
			t.Fatalf("pool %s has no bucket", pool)
		}
		for a, x := range buckets {
			for b, y := range buckets {
				if a != b && strings.HasPrefix(y, x) {
					t.Fatalf("pool %s: bucket %q holds bucket %q", pool, x, y)
				}
			}
		}
		var cap uint64
		for _, s := range buckets {
			n, _ := keySpan(pool, hintLen(pool), s)
			cap += n
		}
		if want := ipnet.Subnets(pool, hintLen(pool)); cap != want {
			t.Fatalf("pool %s: buckets hold %d subnets of /%d, the pool %d", pool, cap, hintLen(pool), want)
		}
		in := func(subnet netip.Prefix) {
			k := ipnet.Key(subnet)
			n := 0
			for _, s := range buckets {
				if strings.HasPrefix(k, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("pool %s: key %s is in %d buckets of %q", pool, k, n, buckets)
			}
		}
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		for bits := pool.Bits(); bits <= 32; bits++ {
			if all := ipnet.Subnets(pool, bits); all <= 1<<12 {
				for j := uint64(0); j < all; j++ {
					in(ipnet.Subnet(pool, bits, j))
				}
				continue
			}
			for range 2000 {
				in(ipnet.Subnet(pool, bits, rng.Uint64N(ipnet.Subnets(pool, bits))))
			}
		}
	}
	if total > max(budget, len(pools)) {
		t.Fatalf("%d buckets for %d pools, budget %d", total, len(pools), budget)
	}
	return total
}

func prefixes(ps ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// The plan: disjoint buckets covering every key, within the budget; small
// pools one query; big ones split evenly up to the budget, shared by
// capacity.
func TestPlanBuckets(t *testing.T) {
	for _, tc := range []struct {
		pools []string
		want  []int // buckets per pool
	}{
		{[]string{"10.42.0.0/16"}, []int{1}},   // the default pool: 256 /24s
		{[]string{"192.168.7.0/24"}, []int{1}}, // one subnet
		{[]string{"10.42.3.64/26"}, []int{1}},  // smaller than a /24
		{[]string{"10.64.0.0/13"}, []int{8}},   // 2,048: one bucket a second octet
		{[]string{"10.64.0.0/10"}, []int{64}},  // 16,384: the budget, 256 each
		{[]string{"10.0.0.0/8"}, []int{60}},    // 65,536: budget binds unevenly
		{[]string{"0.0.0.0/0"}, []int{-1}},     // odd but planned
		{[]string{"172.16.0.0/12", "10.42.0.0/16"}, []int{-1, 1}},
		{[]string{"10.64.0.0/10", "10.42.0.0/16", "10.43.0.0/16"}, []int{-1, 1, 1}},
	} {
		pools := prefixes(tc.pools...)
		plan := planBuckets(pools, watchBudget, watchTarget)
		checkPlan(t, pools, plan, watchBudget)
		for i, want := range tc.want {
			if want >= 0 && len(plan[i]) != want {
				t.Errorf("%v: pool %s has %d buckets %q; want %d", tc.pools, pools[i], len(plan[i]), plan[i], want)
			}
		}
	}

	// The /10 of /24s: 64 buckets of 256 subnets each, one per second octet.
	pools := prefixes("10.64.0.0/10")
	for _, s := range planBuckets(pools, watchBudget, watchTarget)[0] {
		if n, _ := keySpan(pools[0], 24, s); n != 256 {
			t.Errorf("bucket %q of %s holds %d /24s; want 256", s, pools[0], n)
		}
	}

	// Fine targets split deep, down to single addresses, still covering.
	for _, target := range []uint64{0, 1, 3, 16} {
		for _, budget := range []int{1, 5, 64, 500} {
			pools := prefixes("10.42.0.0/16", "10.43.128.0/17", "192.168.0.0/22", "10.1.2.0/24")
			checkPlan(t, pools, planBuckets(pools, budget, target), budget)
		}
	}

	// More pools than budget: one bucket each.
	var many []netip.Prefix
	for i := range 80 {
		many = append(many, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16))
	}
	if n := checkPlan(t, many, planBuckets(many, watchBudget, watchTarget), watchBudget); n != 80 {
		t.Errorf("80 pools: %d buckets; want 80", n)
	}

	// Not IPv4: the whole pool.
	v6 := prefixes("fd00::/64")
	if plan := planBuckets(v6, watchBudget, 0); len(plan[0]) != 1 || plan[0][0] != "" {
		t.Errorf("IPv6 pool: %q; want one bucket, the whole pool", plan[0])
	}
}

// What planning costs SetPools: the /10 of the benchmarks and ten /16s.
func BenchmarkPlanBuckets(b *testing.B) {
	pools := prefixes("10.64.0.0/10")
	for i := range 10 {
		pools = append(pools, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16))
	}
	for b.Loop() {
		planBuckets(pools, watchBudget, watchTarget)
	}
}
