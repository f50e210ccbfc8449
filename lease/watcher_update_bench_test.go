package lease

import (
	"net/netip"
	"testing"

	"github.com/felt-net/felt/internal/ipnet"
)

// updateBenchWatch is a watch of 10,000 leases of one /10 in 64 buckets,
// every bucket answered.
func updateBenchWatch(b *testing.B) (*Watch, netip.Prefix, []Lease) {
	pool := netip.MustParsePrefix("10.64.0.0/10")
	w := (&Registry{prefix: "felt/"}).NewWatch(nil)
	b.Cleanup(w.Close)
	wp := &watchedPool{pool: pool, key: w.r.poolLeasesPrefix(pool)}
	for _, s := range planBuckets([]netip.Prefix{pool}, watchBudget, watchTarget)[0] {
		wp.buckets = append(wp.buckets, &bucket{prefix: wp.key + s, pool: pool, answered: true, records: map[string]record{}})
	}
	var ls []Lease
	for i := range 10000 {
		subnet := ipnet.Subnet(pool, 24, uint64(i)*16384/10000)
		bk := wp.buckets[i%len(wp.buckets)]
		l := Lease{Pool: pool, Subnet: subnet, HostID: "0123456789abcdef0123456789abcdef"}
		bk.records[w.r.leaseKey(pool, subnet)] = record{index: uint64(i + 1), lease: l, ok: true}
		ls = append(ls, l)
	}
	w.pools = []*watchedPool{wp}
	return w, pool, ls
}

// What making an Update costs Next once a change is read, with 10,000
// leases of one /10 in 64 buckets: one lease changed is one lease told,
// whatever the pool holds.
func BenchmarkWatchUpdate(b *testing.B) {
	w, pool, ls := updateBenchWatch(b)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d := w.deltaLocked(pool)
		d.upserted[ls[i%len(ls)].Subnet] = ls[i%len(ls)]
		if u := w.updateLocked(true); len(u.Changes[pool].Upserted) != 1 {
			b.Fatalf("%d leases", len(u.Changes[pool].Upserted))
		}
	}
}

// What a Reset costs (the pool's first answer, or read afresh): every
// lease of the pool listed from the buckets' records, in key order.
func BenchmarkWatchUpdateReset(b *testing.B) {
	w, pool, _ := updateBenchWatch(b)
	b.ReportAllocs()
	for b.Loop() {
		w.resetLocked(pool)
		if u := w.updateLocked(true); len(u.Changes[pool].Upserted) != 10000 {
			b.Fatalf("%d leases", len(u.Changes[pool].Upserted))
		}
	}
}
