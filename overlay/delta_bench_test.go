package overlay

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
)

// clockOnly is a LeaseSource with a clock only: Peers needs no more.
type clockOnly struct{}

func (clockOnly) Leases(context.Context, netip.Prefix) ([]lease.Lease, error) { return nil, nil }
func (clockOnly) RemoveExpired(context.Context, []lease.Lease) int            { return 0 }
func (clockOnly) Now() time.Time                                              { return time.Now() }

// BenchmarkDelta is the in-memory work a lease change costs the Manager
// besides the backend's, all O(leases of the pool): indexing the watch's
// answer by pool, and comparing its peers with the last
// sync (here: nothing changed, as for a renewal; the common case).
func BenchmarkDelta(b *testing.B) {
	pool := netip.MustParsePrefix("10.128.0.0/9")
	for _, count := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("leases=%d", count), func(b *testing.B) {
			var all []lease.Lease
			for i := range count {
				j := i + 2
				all = append(all, lease.Lease{Pool: pool, HostID: fmt.Sprintf("peer-%d", i),
					Subnet:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + j/256), byte(j % 256), 0}), 24),
					PublicIP:    netip.AddrFrom4([4]byte{172, 16, byte(i / 256), byte(i % 256)}),
					BackendData: []byte(`{"vtepMAC":"02:00:00:00:00:01"}`), Expiry: time.Now().Add(time.Hour)})
			}
			m := &Manager{cfg: ManagerConfig{Leases: clockOnly{}, HostID: "me"}}
			n := Network{Pool: pool, Subnet: netip.MustParsePrefix("10.128.1.0/24")}
			synced := peersOf(m.Peers(n, all))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				now := m.cfg.Leases.Now()
				isPeer := func(l lease.Lease) bool { return m.isPeer(n, l, now) }
				if changed, removed := synced.delta(groupByPool(all)[pool], isPeer); len(changed)+len(removed) != 0 {
					b.Fatal("a change")
				}
			}
		})
	}
}
