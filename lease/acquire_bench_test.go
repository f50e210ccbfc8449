package lease_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
	"github.com/felt-net/felt/testkit/consul"
)

// Acquire and Renew in a big pool (issue #14): a /10 in /24s (16,384
// subnets) already holding 10,000 leases, 4 calls at a time, each for a
// host of its own, on each store. It reports calls per second and the
// median and 99th percentile latency. Run with a fixed count, e.g.
//
//	go test -run '^$' -bench 'With10000Leases' -benchtime 400x ./lease/

const (
	bigPoolLeases  = 10000
	bigPoolWorkers = 4
)

var bigPool = netip.MustParsePrefix("10.64.0.0/10")

func BenchmarkAcquireWith10000Leases(b *testing.B) {
	eachBenchStore(b, func(b *testing.B, s kv.Store) {
		r, n := bigPoolRegistry(b, s)
		var next atomic.Int64
		runCalls(b, func(_, _ int) error {
			k := next.Add(1)
			_, err := r.Acquire(context.Background(), lease.AcquireRequest{Network: n, TTL: time.Hour, Owner: bigPoolOwner(int(k))})
			return err
		})
	})
}

func BenchmarkRenewWith10000Leases(b *testing.B) {
	eachBenchStore(b, func(b *testing.B, s kv.Store) {
		r, n := bigPoolRegistry(b, s)
		held := make([]lease.Lease, bigPoolWorkers)
		for w := range held {
			l, err := r.Acquire(context.Background(), lease.AcquireRequest{Network: n, TTL: time.Hour, Owner: bigPoolOwner(w + 1)})
			if err != nil {
				b.Fatal(err)
			}
			held[w] = l
		}
		runCalls(b, func(w, _ int) error { // each worker renews its own lease
			_, err := r.Renew(context.Background(), lease.RenewRequest{Network: n, Subnet: held[w].Subnet, TTL: time.Hour, Owner: bigPoolOwner(w + 1)})
			return err
		})
	})
}

func eachBenchStore(b *testing.B, run func(b *testing.B, s kv.Store)) {
	b.Run("embedded", func(b *testing.B) {
		s, err := boltkv.Open(filepath.Join(b.TempDir(), "felt.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		run(b, s)
	})
	b.Run("consul", func(b *testing.B) {
		s, err := consulkv.New(consul.Start(b, consul.Options{}).APIConfig())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		run(b, s)
	})
}

func bigPoolOwner(k int) lease.Owner {
	return lease.Owner{HostID: fmt.Sprint("bench-", k), PublicIP: netip.AddrFrom4([4]byte{100, 64 + byte(k>>16), byte(k >> 8), byte(k)}),
		BackendData: json.RawMessage(fmt.Sprintf(`{"vtepMAC":"02:fb:00:%02x:%02x:%02x"}`, byte(k>>16), byte(k>>8), byte(k)))}
}

// bigPoolRegistry settles bigPool and writes bigPoolLeases leases of
// simulated hosts at random subnets, straight into the store (the records
// Acquire writes, without its other keys).
func bigPoolRegistry(b *testing.B, s kv.Store) (*lease.Registry, lease.Network) {
	return bigPoolRegistryT(b, s)
}

func bigPoolRegistryT(b testing.TB, s kv.Store) (*lease.Registry, lease.Network) {
	b.Helper()
	ctx := context.Background()
	r := lease.NewRegistry(s, "felt/", nil)
	n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: bigPool, Backend: "vxlan"})
	if err != nil {
		b.Fatal(err)
	}
	idx := rand.Perm(int(ipnet.Subnets(bigPool, n.SubnetLen)))[:bigPoolLeases]
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	var at atomic.Int64
	for range 16 {
		wg.Go(func() {
			for i := int(at.Add(1)) - 1; i < len(idx); i = int(at.Add(1)) - 1 {
				sub := ipnet.Subnet(bigPool, n.SubnetLen, uint64(idx[i]))
				o := bigPoolOwner(1_000_000 + i)
				val, _ := json.Marshal(lease.Lease{Pool: bigPool, Subnet: sub, HostID: o.HostID, PublicIP: o.PublicIP,
					BackendData: o.BackendData, Expiry: time.Now().Add(24 * time.Hour)})
				if err := s.CAS(ctx, "felt/leases/"+ipnet.Key(bigPool)+"/"+ipnet.Key(sub), val, 0); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return r, n
}

// runCalls runs call b.N times, bigPoolWorkers at a time (worker is the
// caller's number, i the call's), and reports the rate and latencies.
func runCalls(b *testing.B, call func(worker, i int) error) {
	b.Helper()
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range bigPoolWorkers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
				t0 := time.Now()
				if err := call(w, i); err != nil {
					failed.Store(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
	b.ReportMetric(float64(lat[len(lat)/2])/float64(time.Millisecond), "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/float64(time.Millisecond), "p99-ms")
}
