package lease

import (
	"net/netip"
	"testing"

	"github.com/felt-net/felt/internal/ipnet"
)

// What making an Update costs Next once a change is read, with 10,000
// leases of one /10 in 64 buckets: every bucket's list of leases is copied
// into the Update. O(leases), but a copy, no decoding.
func BenchmarkWatchUpdate(b *testing.B) {
	pool := netip.MustParsePrefix("10.64.0.0/10")
	w := (&Registry{prefix: "felt/"}).NewWatch(nil)
	defer w.Close()
	wp := &watchedPool{pool: pool, key: w.r.poolLeasesPrefix(pool)}
	for _, s := range planBuckets([]netip.Prefix{pool}, watchBudget, watchTarget)[0] {
		wp.buckets = append(wp.buckets, &bucket{prefix: wp.key + s, pool: pool, answered: true})
	}
	for i := range 10000 {
		subnet := ipnet.Subnet(pool, 24, uint64(i)*16384/10000)
		bk := wp.buckets[i%len(wp.buckets)]
		bk.leases = append(bk.leases, Lease{Pool: pool, Subnet: subnet, HostID: "0123456789abcdef0123456789abcdef"})
	}
	w.pools = []*watchedPool{wp}
	b.ReportAllocs()
	for b.Loop() {
		w.changed[pool] = true
		if u := w.updateLocked(true); len(u.Leases) != 10000 {
			b.Fatalf("%d leases", len(u.Leases))
		}
	}
}
