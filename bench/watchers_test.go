package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/testkit/hosts"
)

// Simulated watchers: more watching hosts than the machine can run felt
// for. Each is a goroutine with its own connections to Consul holding the
// blocking queries a felt host holds on the leases, reading every answer
// and throwing it away (no decoding: the bench's CPU must not compete with
// Consul's on two cores). What they show is Consul's side: its CPU and
// the bytes it sends per lease change as watchers grow, for a projection
// to 1,000 hosts.

const (
	// watcherChanges and watcherBudget bound each number of watchers:
	// up to watcherChanges changes, no more after watcherBudget (at least
	// watcherMinChanges), so the whole run stays near four minutes.
	watcherChanges    = 20
	watcherMinChanges = 3
	watcherBudget     = 40 * time.Second
)

// WatcherLoad is Consul's load against simulated watchers.
type WatcherLoad struct {
	Leases int `json:"leases"` // in the watched prefix
	// Watch describes the queries each watcher holds.
	Watch  string         `json:"watch"`
	Points []WatcherPoint `json:"points"`
}

// WatcherPoint is one number of watchers: over Changes single lease
// changes (one record rewritten, one at a time, each waited for until
// every watcher has answered), Consul's CPU per change and the bytes it
// sent the watchers per change (all of them, and per watcher), on the
// wire as the watchers' connections read them; FanOut is a change's
// write until the last watcher's answer; IdleConsulCPU is Consul's CPU
// (% of a core) with the watchers connected and nothing changing.
type WatcherPoint struct {
	Watchers                int     `json:"watchers"`
	Changes                 int     `json:"changes"`
	WindowS                 float64 `json:"window_s"`
	ConsulCPUMSPerChange    float64 `json:"consul_cpu_ms_per_change"`
	BytesPerChange          int64   `json:"bytes_per_change"`
	BytesPerChangePerWatch  int64   `json:"bytes_per_change_per_watcher"`
	BytesPerS               float64 `json:"bytes_per_s"`
	FanOut                  Dist    `json:"write_to_every_watcher_answered"`
	IdleConsulCPU           float64 `json:"consul_idle_cpu_percent"`
	ConsulCPUPercentChanges float64 `json:"consul_cpu_percent_during_changes"`
}

// leaseWatcher runs one simulated host's lease watch on client (its own
// connections) against Consul at addr until ctx ends, calling seen after
// every answer with the store index it reflects or, byExpiry, with the
// latest lease expiry it holds (UnixNano): a watch that hides the index
// (lease.Watch) still shows the renewal each change is.
type leaseWatcher struct {
	desc     string
	byExpiry bool
	run      func(ctx context.Context, client *http.Client, addr string, seen func(uint64))
}

// leaseWatchWatcher runs felt's own lease watch (lease.Watch over pool:
// one blocking query per bucket of the pool's keys) on the watcher's
// connections, as a felt host attached to a network of pool does. It hides
// the store index, so it reports the latest lease expiry it holds (each
// change is a renewal).
func leaseWatchWatcher(pool netip.Prefix) leaseWatcher {
	return leaseWatcher{
		desc:     fmt.Sprintf("lease.Watch of %s (a blocking query per bucket of its keys)", pool),
		byExpiry: true,
		run: func(ctx context.Context, client *http.Client, addr string, seen func(uint64)) {
			store, err := consulkv.New(&consulapi.Config{Address: addr, HttpClient: client})
			if err != nil {
				return
			}
			defer store.Close()
			w := lease.NewRegistry(store, "felt/", nil).NewWatch(nil)
			defer w.Close()
			w.SetPools([]netip.Prefix{pool})
			var latest int64 // of every lease told so far
			for {
				u, err := w.Next(ctx)
				if err != nil {
					return
				}
				for _, c := range u.Changes { // the renewed lease is told, with the latest expiry
					for _, l := range c.Upserted {
						latest = max(latest, l.Expiry.UnixNano())
					}
				}
				seen(uint64(latest))
			}
		},
	}
}

// watcherLoad measures Consul against each number of watchers in counts,
// the watchers of one number stopped before the next start.
func watcherLoad(s *scope, c *hosts.Cluster, store kv.Store, consul int, counts []int, w leaseWatcher) WatcherLoad {
	ctx := context.Background()
	pairs, _, err := store.List(ctx, "felt/leases/")
	if err != nil {
		s.Fatalf("%v", err)
	}
	if len(pairs) == 0 {
		s.Fatalf("no leases to watch")
	}
	// The record rewritten for each change: a simulated lease, renewed
	// (a new expiry; Consul skips a write that changes nothing, and its
	// watchers never hear of it).
	key := pairs[len(pairs)-1].Key
	var l lease.Lease
	if err := json.Unmarshal(pairs[len(pairs)-1].Value, &l); err != nil {
		s.Fatalf("lease %s: %v", key, err)
	}
	// renew writes the change and returns what every watcher's seen must
	// reach for it to have answered.
	renew := func(ctx context.Context) (uint64, error) {
		l.Expiry = time.Now().Add(time.Hour)
		b, err := json.Marshal(l)
		if err != nil {
			return 0, err
		}
		if err := store.Put(ctx, key, b); err != nil {
			return 0, err
		}
		if w.byExpiry {
			return uint64(l.Expiry.UnixNano()), nil
		}
		p, err := store.Get(ctx, key)
		return p.ModifyIndex, err
	}
	out := WatcherLoad{Leases: len(pairs), Watch: w.desc}
	for _, k := range counts {
		logf("scale: %d simulated watchers of %d leases", k, len(pairs))
		out.Points = append(out.Points, watcherPoint(s, c, consul, k, renew, w))
		p := out.Points[len(out.Points)-1]
		logf("  per change: Consul CPU %.1f ms, %d bytes sent (%d per watcher); write → every watcher answered p50 %.0f ms",
			p.ConsulCPUMSPerChange, p.BytesPerChange, p.BytesPerChangePerWatch, p.FanOut.P50)
	}
	return out
}

func watcherPoint(s *scope, c *hosts.Cluster, consul, k int, change func(context.Context) (uint64, error), w leaseWatcher) WatcherPoint {
	p := WatcherPoint{Watchers: k}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var read atomic.Int64
	seen := make([]atomic.Uint64, k)
	for i := range k {
		// Each its own source address (127.1.x.y, delivered locally), as
		// hosts would be: Consul limits connections per client address.
		tr := countingTransport(c.UL, &net.TCPAddr{IP: net.IPv4(127, 1, byte(i>>8), byte(i)+1)}, &read)
		client := &http.Client{Transport: tr}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer tr.CloseIdleConnections()
			w.run(ctx, client, c.Consul.Addr, func(idx uint64) { seen[i].Store(idx) })
		}()
	}
	// Every watcher has its first answer: the start-up's reads are over.
	// Bounded above the harness's 30 s: 100 first reads of 10,000 leases
	// take Consul a while on two shared cores.
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		n := 0
		for i := range seen {
			if seen[i].Load() != 0 {
				n++
			}
		}
		if n == k {
			break
		}
		if time.Now().After(deadline) {
			s.Fatalf("only %d of %d watchers answered after 3 minutes", n, k)
		}
	}
	time.Sleep(time.Second)
	p.IdleConsulCPU = cpuOver(s, []int{consul}, 3*time.Second)[0]

	cpu0 := procsCPUEach(s, []int{consul})[0]
	read0 := read.Load()
	start := time.Now()
	var fan []time.Duration
	for len(fan) < watcherChanges && (len(fan) < watcherMinChanges || time.Since(start) < watcherBudget) {
		t0 := time.Now()
		want, err := change(ctx)
		if err != nil {
			s.Fatalf("change %d: %v", len(fan), err)
		}
		for i := 0; i < k; {
			if seen[i].Load() >= want {
				i++
				continue
			}
			if time.Since(t0) > 2*time.Minute {
				s.Fatalf("change %d: watcher %d of %d has not answered after 2 minutes", len(fan), i, k)
			}
			time.Sleep(time.Millisecond)
		}
		fan = append(fan, time.Since(t0))
	}
	// The watchers' next Wait starts with a read: let the last ones land.
	time.Sleep(500 * time.Millisecond)
	took := time.Since(start)
	cpu := procsCPUEach(s, []int{consul})[0] - cpu0
	sent := read.Load() - read0
	n := len(fan)
	if k > 0 && sent == 0 {
		s.Fatalf("%d watchers read nothing over %d changes", k, n)
	}
	p.Changes, p.WindowS = n, round3(took.Seconds())
	p.ConsulCPUMSPerChange = round3(1000 * cpu / float64(n))
	p.ConsulCPUPercentChanges = round3(100 * cpu / took.Seconds())
	p.BytesPerChange = sent / int64(n)
	if k > 0 {
		p.BytesPerChangePerWatch = p.BytesPerChange / int64(k)
	}
	p.BytesPerS = round3(float64(sent) / took.Seconds())
	p.FanOut = distOf(fan, "ms")
	return p
}
