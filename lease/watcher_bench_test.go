package lease_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/testkit/consul"
)

// What one lease change costs a watching host, with n leases in a /10 pool
// of /24s (16,384 subnets): the flat watch (WatchLeases, one query on
// every lease) against the sharded one (Watch). Each op renews one random
// lease (a new expiry, as the renewal loop does) and waits until the
// watch has seen it. Reported per change: bytes of keys and values the
// store's queries answered (bytes/change), the queries that answered
// (answers/change) and the records decoded (decodes/change); on Consul,
// also the HTTP response bytes and requests.

var benchPool = netip.MustParsePrefix("10.64.0.0/10")

// benchLeases are n leases at distinct random /24s of benchPool, with
// records as felt writes them (a vxlan VTEP MAC, a 32-hex host ID).
func benchLeases(n int) []lease.Lease {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	taken := map[uint64]bool{}
	out := make([]lease.Lease, 0, n)
	for len(out) < n {
		i := rng.Uint64N(ipnet.Subnets(benchPool, 24))
		if taken[i] {
			continue
		}
		taken[i] = true
		out = append(out, lease.Lease{Pool: benchPool, Subnet: ipnet.Subnet(benchPool, 24, i),
			HostID: fmt.Sprintf("%032x", rng.Uint64()), PublicIP: netip.AddrFrom4([4]byte{192, 168, byte(len(out) >> 8), byte(len(out))}),
			BackendData: json.RawMessage(`{"vtepMAC":"02:42:ac:11:00:02"}`),
			Expiry:      time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)})
	}
	return out
}

func record(b *testing.B, l lease.Lease) (string, []byte) {
	v, err := json.Marshal(l)
	if err != nil {
		b.Fatal(err)
	}
	return leaseKey(l.Pool, l.Subnet), v
}

// renewOne rewrites a random lease with a later expiry.
func renewOne(b *testing.B, s kv.Store, ls []lease.Lease, rng *rand.Rand) {
	l := &ls[rng.IntN(len(ls))]
	l.Expiry = l.Expiry.Add(time.Second)
	k, v := record(b, *l)
	if err := s.Put(context.Background(), k, v); err != nil {
		b.Fatal(err)
	}
}

// benchWatch runs the ops on s (a counting store over a seeded store)
// and reports per change; extra adds a store's own metrics.
func benchWatch(b *testing.B, kind string, s *counting, ls []lease.Lease, settle func(), extra func(ops int)) {
	ctx := context.Background()
	r := lease.NewRegistry(s, "felt/", nil)
	rng := rand.New(rand.NewPCG(2, 2))
	var decodes func() int64
	var seen func()
	switch kind {
	case "flat":
		// A host holds the query open, as the Manager's loop did.
		type answer struct {
			n   int
			err error
		}
		answers := make(chan answer)
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		go func() {
			defer close(done)
			var idx uint64
			for {
				ls, next, err := r.WatchLeases(ctx, idx)
				if ctx.Err() != nil {
					return
				}
				idx = next
				select {
				case answers <- answer{len(ls), err}:
				case <-ctx.Done():
					return
				}
			}
		}()
		<-answers // the first, at once
		var n int64
		decodes = func() int64 { return n }
		seen = func() {
			a := <-answers
			if a.err != nil || a.n != len(ls) {
				b.Fatalf("flat watch: %d leases, %v; want %d", a.n, a.err, len(ls))
			}
			n += int64(a.n)
		}
	case "sharded":
		w := newView(r.NewWatch(nil))
		defer w.Close()
		w.NoCoalesce()
		w.SetPools([]netip.Prefix{benchPool})
		for u := next(b, w); !u.Complete; u = next(b, w) {
		}
		decodes = w.Decodes
		seen = func() {
			if u := next(b, w); len(u.Leases) != len(ls) {
				b.Fatalf("update of %d leases; want %d", len(u.Leases), len(ls))
			}
		}
	}
	settle()
	answers0, bytes0 := s.snapshot()
	decodes0 := decodes()
	extra(-1)
	b.ResetTimer()
	for range b.N {
		renewOne(b, s, ls, rng)
		seen()
		// Each change finds the watch idle, in its blocking queries.
		b.StopTimer()
		settle()
		b.StartTimer()
	}
	b.StopTimer()
	answers1, bytes1 := s.snapshot()
	sum := func(m map[string]int) (n int) {
		for _, v := range m {
			n += v
		}
		return n
	}
	b.ReportMetric(float64(bytes1-bytes0)/float64(b.N), "bytes/change")
	b.ReportMetric(float64(sum(answers1)-sum(answers0))/float64(b.N), "answers/change")
	b.ReportMetric(float64(decodes()-decodes0)/float64(b.N), "decodes/change")
	extra(b.N)
}

// On the embedded store.
func BenchmarkWatchChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		ls := benchLeases(n)
		for _, kind := range []string{"flat", "sharded"} {
			b.Run(fmt.Sprintf("%s/leases=%d", kind, n), func(b *testing.B) {
				s, err := boltkv.Open(filepath.Join(b.TempDir(), "felt.db"))
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				for _, l := range ls {
					k, v := record(b, l)
					if err := s.Put(context.Background(), k, v); err != nil {
						b.Fatal(err)
					}
				}
				benchWatch(b, kind, newCounting(s), ls, func() { time.Sleep(10 * time.Millisecond) }, func(int) {})
			})
		}
	}
}

// On Consul, counting what its HTTP API sends.
func BenchmarkWatchChangeConsul(b *testing.B) {
	for _, n := range []int{20, 1000, 10000} {
		ls := benchLeases(n)
		for _, kind := range []string{"flat", "sharded"} {
			b.Run(fmt.Sprintf("%s/leases=%d", kind, n), func(b *testing.B) {
				cfg := consul.Start(b, consul.Options{}).APIConfig()
				rt := &countingRT{base: &http.Transport{MaxIdleConnsPerHost: 128}}
				cfg.HttpClient = &http.Client{Transport: rt}
				seedConsul(b, cfg, ls)
				s, err := consulkv.New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				var bytes0, reqs0 int64
				settle := func() { // until no request started for 50 ms
					for n := rt.reqs.Load(); ; {
						time.Sleep(50 * time.Millisecond)
						if m := rt.reqs.Load(); m == n {
							return
						} else {
							n = m
						}
					}
				}
				benchWatch(b, kind, newCounting(s), ls, settle, func(ops int) {
					if ops < 0 {
						bytes0, reqs0 = rt.bytes.Load(), rt.reqs.Load()
						return
					}
					b.ReportMetric(float64(rt.bytes.Load()-bytes0)/float64(ops), "http-bytes/change")
					b.ReportMetric(float64(rt.reqs.Load()-reqs0)/float64(ops), "http-reqs/change")
				})
			})
		}
	}
}

// seedConsul writes ls 64 to a transaction.
func seedConsul(b *testing.B, cfg *consulapi.Config, ls []lease.Lease) {
	c, err := consulapi.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < len(ls); i += 64 {
		var ops consulapi.TxnOps
		for _, l := range ls[i:min(i+64, len(ls))] {
			k, v := record(b, l)
			ops = append(ops, &consulapi.TxnOp{KV: &consulapi.KVTxnOp{Verb: consulapi.KVSet, Key: k, Value: v}})
		}
		ok, resp, _, err := c.Txn().Txn(ops, nil)
		if err != nil || !ok {
			b.Fatalf("seeding Consul: %v %v", err, resp)
		}
	}
}

// countingRT counts the reads' (GETs') HTTP responses' bytes (headers,
// roughly, and body) and requests: what the watches cost, not the writes.
type countingRT struct {
	base        http.RoundTripper
	bytes, reqs atomic.Int64
}

func (c *countingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet {
		return resp, err
	}
	c.reqs.Add(1)
	h := int64(len("HTTP/1.1 200 OK\r\n\r\n"))
	for k, vs := range resp.Header {
		for _, v := range vs {
			h += int64(len(k) + len(v) + 4)
		}
	}
	c.bytes.Add(h)
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.bytes}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
