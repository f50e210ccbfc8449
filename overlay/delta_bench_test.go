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

// BenchmarkDelta is the in-memory comparison a lease change costs the
// Manager besides the backend's: its peers at the subnets the change
// touched (one, here: a renewal, the common case, so nothing changed)
// against the last sync (deltaAt); and, for a pool told whole (a Reset),
// at every subnet (deltaAll).
func BenchmarkDelta(b *testing.B) {
	pool := netip.MustParsePrefix("10.128.0.0/9")
	for _, count := range []int{1000, 10000} {
		leases := map[netip.Prefix]lease.Lease{}
		var all []lease.Lease
		for i := range count {
			j := i + 2
			l := lease.Lease{Pool: pool, HostID: fmt.Sprintf("peer-%d", i),
				Subnet:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + j/256), byte(j % 256), 0}), 24),
				PublicIP:    netip.AddrFrom4([4]byte{172, 16, byte(i / 256), byte(i % 256)}),
				BackendData: []byte(`{"vtepMAC":"02:00:00:00:00:01"}`), Expiry: time.Now().Add(time.Hour)}
			leases[l.Subnet] = l
			all = append(all, l)
		}
		m := &Manager{cfg: ManagerConfig{Leases: clockOnly{}, HostID: "me"}}
		n := Network{Pool: pool, Subnet: netip.MustParsePrefix("10.128.1.0/24")}
		synced := peersOf(m.Peers(n, all))
		renewed := map[netip.Prefix]bool{all[count/2].Subnet: true}
		b.Run(fmt.Sprintf("at/leases=%d", count), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				now := m.cfg.Leases.Now()
				isPeer := func(l lease.Lease) bool { return m.isPeer(n, l, now) }
				if changed, removed := synced.deltaAt(renewed, leases, isPeer); len(changed)+len(removed) != 0 {
					b.Fatal("a change")
				}
			}
		})
		b.Run(fmt.Sprintf("all/leases=%d", count), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				now := m.cfg.Leases.Now()
				isPeer := func(l lease.Lease) bool { return m.isPeer(n, l, now) }
				if changed, removed := synced.deltaAll(leases, isPeer); len(changed)+len(removed) != 0 {
					b.Fatal("a change")
				}
			}
		})
	}
}
