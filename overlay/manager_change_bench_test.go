package overlay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
)

// expiringSource is a LeaseSource whose RemoveExpired looks at every lease
// it is given, as lease.Registry's does (removing none: none expired).
type expiringSource struct{ clockOnly }

func (expiringSource) RemoveExpired(_ context.Context, ls []lease.Lease) int {
	now := time.Now()
	n := 0
	for _, l := range ls {
		if l.Expired(now) {
			n++
		}
	}
	return n
}

// countingDelta is a backend that programs nothing and counts its syncs.
type countingDelta struct{ syncs, deltas int }

func (*countingDelta) Name() string                            { return "bench" }
func (*countingDelta) Overhead() int                           { return 0 }
func (*countingDelta) Options() Options                        { return Options{} }
func (*countingDelta) LeaseData(netip.Prefix) any              { return nil }
func (*countingDelta) DeviceName(Network) string               { return "" }
func (*countingDelta) Setup(context.Context, Network) error    { return nil }
func (*countingDelta) Teardown(context.Context, Network) error { return nil }
func (*countingDelta) Check(context.Context, Network, func(context.Context) ([]lease.Lease, error)) error {
	return nil
}
func (b *countingDelta) Sync(context.Context, Network, []lease.Lease) error { b.syncs++; return nil }
func (b *countingDelta) SyncPeers(context.Context, Network, []lease.Lease, []netip.Prefix) error {
	b.deltas++
	return nil
}

// BenchmarkManagerChange is the Manager's CPU for one lease change (issue
// #14), from the watch's Update to the backend's SyncPeers: the Update
// taken in (apply), the pass that syncs the delta (reconcileDirty), and
// what Run does after every pass (the expiry timer armed again, expired
// leases looked for). The backend programs nothing: the kernel's share is
// BenchmarkScaleLeaseChange's. Each op one peer arrives or (every other
// op) leaves, as there; the watch's share is lease's BenchmarkWatchAnswer.
func BenchmarkManagerChange(b *testing.B) {
	pool := netip.MustParsePrefix("10.128.0.0/9")
	for _, count := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("leases=%d", count), func(b *testing.B) {
			ctx := context.Background()
			peer := func(i int) lease.Lease {
				j := i + 2
				return lease.Lease{Pool: pool, HostID: fmt.Sprintf("peer-%d", i),
					Subnet:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + j/256), byte(j % 256), 0}), 24),
					PublicIP:    netip.AddrFrom4([4]byte{172, 16, byte(i / 256), byte(i%256 | 1)}),
					BackendData: []byte(`{"vtepMAC":"02:00:00:00:00:01"}`), Expiry: time.Now().Add(time.Hour)}
			}
			var without []lease.Lease
			for i := range count {
				without = append(without, peer(i))
			}
			extra := peer(count)
			be := &countingDelta{}
			m := NewManager(ManagerConfig{Leases: expiringSource{}, HostID: "me", Backends: NewBackends(be),
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			n := Network{ID: "net", Pool: pool, Subnet: netip.MustParsePrefix("10.128.1.0/24"), Backend: "bench"}
			if err := m.Attach(ctx, n); err != nil {
				b.Fatal(err)
			}
			m.apply(lease.Update{Changes: map[netip.Prefix]lease.PoolChange{pool: {Reset: true, Upserted: without}},
				Changed: []netip.Prefix{pool}, Complete: true})
			if ok, _ := m.reconcileDirty(ctx); !ok || be.syncs != 1 {
				b.Fatalf("first pass: ok %v, %d syncs", ok, be.syncs)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				c := lease.PoolChange{Upserted: []lease.Lease{extra}}
				if i%2 == 1 {
					c = lease.PoolChange{Removed: []netip.Prefix{extra.Subnet}}
				}
				u := lease.Update{Changes: map[netip.Prefix]lease.PoolChange{pool: c}, Changed: []netip.Prefix{pool}, Complete: true}
				m.apply(u)
				if ok, _ := m.reconcileDirty(ctx); !ok {
					b.Fatal("pass failed")
				}
				m.nextExpiry()
				m.removeExpired(ctx)
			}
			b.StopTimer()
			if be.deltas != b.N || be.syncs != 1 {
				b.Fatalf("%d deltas, %d full syncs for %d changes", be.deltas, be.syncs, b.N)
			}
		})
	}
}
