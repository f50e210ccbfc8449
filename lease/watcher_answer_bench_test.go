package lease

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
)

// BenchmarkWatchAnswer is the watch's CPU for one lease change (issue #14),
// from its bucket's answer to the Update Next returns: the answer compared
// with the bucket's records (take) and the Update made (updateLocked). No
// store: the answers are made up front, as the store's client hands them
// over. The pool is the overlay's scale benchmark's (a /9 planned into 64
// buckets) with the leases of its peers (10.(128+j/256).(j%256).0/24); each
// op a lease arrives in one bucket or (every other op) leaves it, as in
// overlay's BenchmarkScaleLeaseChange and BenchmarkManagerChange.
func BenchmarkWatchAnswer(b *testing.B) {
	pool := netip.MustParsePrefix("10.128.0.0/9")
	for _, count := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("leases=%d", count), func(b *testing.B) {
			w := (&Registry{prefix: "felt/"}).NewWatch(nil)
			defer w.Close()
			// Planned as SetPools plans, without starting the queries.
			wp := &watchedPool{pool: pool, key: w.r.poolLeasesPrefix(pool)}
			for _, s := range planBuckets([]netip.Prefix{pool}, w.budget, w.target)[0] {
				wp.buckets = append(wp.buckets, &bucket{prefix: wp.key + s, pool: pool, records: map[string]record{}})
			}
			w.pools, w.set = []*watchedPool{wp}, []netip.Prefix{pool}
			var idx uint64 = 10
			pair := func(j int) (kv.Pair, *bucket) {
				sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + j/256), byte(j % 256), 0}), 24)
				l := Lease{Pool: pool, Subnet: sub, HostID: fmt.Sprintf("%032x", j),
					PublicIP:    netip.AddrFrom4([4]byte{172, byte(16 + j/65536), byte(j / 256 % 256), byte(j%256 | 1)}),
					BackendData: json.RawMessage(`{"vtepMAC":"02:42:ac:11:00:02"}`), Expiry: time.Now().Add(time.Hour)}
				v, err := json.Marshal(l)
				if err != nil {
					b.Fatal(err)
				}
				idx++
				p := kv.Pair{Key: w.r.leaseKey(pool, sub), Value: v, ModifyIndex: idx}
				for _, bk := range wp.buckets {
					if strings.HasPrefix(p.Key, bk.prefix) {
						return p, bk
					}
				}
				b.Fatalf("%s in no bucket", p.Key)
				return kv.Pair{}, nil
			}
			answers := map[*bucket][]kv.Pair{}
			for j := range count {
				p, bk := pair(j + 2)
				answers[bk] = append(answers[bk], p)
			}
			states := map[*bucket]*followState{}
			for _, bk := range wp.buckets {
				states[bk] = &followState{first: true}
				w.take(bk, states[bk], answers[bk], idx)
			}
			w.mu.Lock()
			w.updateLocked(true)
			w.mu.Unlock()
			// The lease that comes and goes, and its bucket's two answers
			// (the store lists a prefix in key order).
			extra, bk := pair(count + 2)
			without := answers[bk]
			with := append([]kv.Pair(nil), without...)
			with = append(with, extra)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				ans := with
				if i%2 == 1 {
					ans = without
				}
				idx++
				w.take(bk, states[bk], ans, idx)
				w.mu.Lock()
				u := w.updateLocked(true)
				w.mu.Unlock()
				if len(u.Changed) != 1 {
					b.Fatalf("changed %v", u.Changed)
				}
			}
		})
	}
}
