package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

const (
	realHosts       = 3
	simulatedLeases = 1000
	newLeases       = 20
	// A /13 of /24s holds 2,048 subnets: room for the 1,023 leased here
	// with random picks that rarely collide, as in a real pool.
	cpPool = "10.64.0.0/13"
)

// ControlPlane is the control-plane part of the results.
type ControlPlane struct {
	Available       bool   `json:"available"`
	Reason          string `json:"reason,omitempty"`
	RealHosts       int    `json:"real_hosts"`
	SimulatedLeases int    `json:"simulated_leases"`
	Pool            string `json:"pool"`
	Backend         string `json:"backend"`
	// BulkWriteS: writing the simulated leases (4 writers); BulkConvergeS:
	// from the first write until every real host routes all of them.
	BulkWriteS    float64 `json:"bulk_write_s"`
	BulkConvergeS float64 `json:"bulk_converge_s"`
	// Propagation: a new lease's Acquire call starting, until its route is
	// on every real host (the last of them). Acquire itself (listing 1,000
	// leases, one CAS, one read) is inside it and shown apart.
	Propagation Dist `json:"new_lease_to_route_on_every_peer"`
	Acquire     Dist `json:"acquire_call"`
	// RouteEventResubscribes counts route event socket overflows; after
	// one, times come from 250 ms listings (upper bounds) until caught up.
	RouteEventResubscribes int `json:"route_event_resubscribes"`
	// RSS of the felt daemons, KiB, before and after the simulated leases.
	RSSBeforeKiB []int `json:"felt_rss_before_kib"`
	RSSAfterKiB  []int `json:"felt_rss_after_kib"`
	// QuietCPUPercent is each felt daemon's CPU (user+system, % of one
	// core) over QuietS seconds with the 1,000 leases in place and nothing
	// changing: the resync, lease renewals and peer probing (on by default,
	// every 5 s, at most 50 peers a second; the simulated peers never
	// answer, so each check waits out its timeouts).
	QuietS          float64   `json:"quiet_s"`
	QuietCPUPercent []float64 `json:"felt_quiet_cpu_percent"`
	// QuietScrapes is how many /metrics scrapes (one per host a second)
	// answered during the quiet window; ScrapeBytes the largest answer.
	QuietScrapes int `json:"quiet_metrics_scrapes"`
	ScrapeBytes  int `json:"metrics_scrape_bytes"`
	// Endpoints: CreateEndpoint then Join over the socket, one at a time,
	// with the 1,000 leases in place; removal is Leave then DeleteEndpoint.
	Endpoints      int  `json:"endpoints"`
	EndpointJoin   Dist `json:"create_endpoint_join"`
	EndpointRemove Dist `json:"leave_delete_endpoint"`
}

// controlPlane runs 3 felt hosts on a vxlan network, adds 1,000 simulated
// hosts' leases straight into Consul, and measures how felt keeps up.
// vxlan because it does the most per peer (neighbour, FDB entry, route) and
// accepts peers anywhere; host-gw would refuse the simulated hosts, which
// are not on the underlay segment.
// It fills cp as it goes, so a failure late keeps what was measured.
func controlPlane(s *scope, bin string, cp *ControlPlane) {
	*cp = ControlPlane{RealHosts: realHosts, SimulatedLeases: simulatedLeases, Pool: cpPool, Backend: "vxlan"}
	ctx := context.Background()
	pool := netip.MustParsePrefix(cpPool)
	// Metrics served and scraped too: their cost is part of what the quiet
	// window measures.
	c := hosts.NewCluster(s, bin, realHosts, append(slices.Clone(hostEnv), "FELT_METRICS_ADDR=127.0.0.1:"+cpMetricsPort)...)
	var nets []*hosts.Net
	for _, h := range c.Hosts {
		nets = append(nets, h.MustNetwork(s, hosts.NetSpec{Subnet: cpPool, Opts: map[string]string{"backend": "vxlan"}}))
	}
	store, err := consulkv.New(c.ConsulConfig()) // the leases in Consul, read directly
	if err != nil {
		s.Fatalf("consul client: %v", err)
	}
	reg := lease.NewRegistry(store, "felt/", nil)
	rec, err := reg.GetNetwork(ctx, pool)
	if err != nil {
		s.Fatalf("network record of %s: %v", pool, err)
	}
	var watches []*routeWatch
	for _, h := range c.Hosts {
		watches = append(watches, watchRoutes(s, h.NS, pool))
	}
	pids, err := feltPIDs(c.Hosts)
	if err != nil {
		s.Fatalf("%v", err)
	}
	// The real hosts route each other first: the baseline state.
	for _, n := range nets {
		others := []*routeWatch{}
		for i, w := range watches {
			if c.Hosts[i] != n.Host {
				others = append(others, w)
			}
		}
		if _, err := waitAll(others, n.Subnet, 30*time.Second); err != nil {
			s.Fatalf("real hosts: %v", err)
		}
	}
	cp.RSSBeforeKiB = rssAll(s, pids)

	logf("control plane: writing %d simulated leases", simulatedLeases)
	start := time.Now()
	if err := writeLeases(ctx, reg, rec, 0, simulatedLeases, 4); err != nil {
		s.Fatalf("%v", err)
	}
	cp.BulkWriteS = round3(time.Since(start).Seconds())
	want := simulatedLeases + realHosts - 1 // every peer but itself
	// Bounded, not a target: the harness's WaitFor gives up after 30 s.
	for deadline := time.Now().Add(5 * time.Minute); !allRouted(s, watches, want); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.Fatalf("routes to %d simulated leases not on every host after 5 minutes", simulatedLeases)
		}
	}
	cp.BulkConvergeS = round3(time.Since(start).Seconds())
	logf("  written in %.1f s, routed on all hosts %.1f s after the first write", cp.BulkWriteS, cp.BulkConvergeS)
	// Let the reconciles the burst queued finish, so what follows measures
	// a quiet control plane with 1,000 peers, not the burst's tail.
	time.Sleep(3 * time.Second)
	cp.RSSAfterKiB = rssAll(s, pids)
	cp.QuietS = 20
	logf("control plane: felt's CPU over %.0f quiet seconds, probing %d peers", cp.QuietS, simulatedLeases+realHosts-1)
	stop := scrapeEverySecond(c.Hosts, &cp.QuietScrapes, &cp.ScrapeBytes)
	cp.QuietCPUPercent = cpuOver(s, pids, time.Duration(cp.QuietS)*time.Second)
	stop()
	logf("  felt CPU %v %% of a core (%d scrapes of /metrics, up to %d bytes each)", cp.QuietCPUPercent, cp.QuietScrapes, cp.ScrapeBytes)

	logf("control plane: %d new leases, one at a time", newLeases)
	var prop, acq []time.Duration
	for i := range newLeases {
		t0 := time.Now()
		l, err := reg.Acquire(ctx, simRequest(rec, simulatedLeases+i))
		if err != nil {
			s.Fatalf("new lease %d: %v", i, err)
		}
		acq = append(acq, time.Since(t0))
		at, err := waitAll(watches, l.Subnet, 60*time.Second)
		if err != nil {
			s.Fatalf("new lease %d: %v", i, err)
		}
		prop = append(prop, max(at.Sub(t0), 0))
	}
	cp.Propagation, cp.Acquire = distOf(prop, "ms"), distOf(acq, "ms")
	logf("  lease → route on every peer: p50 %.1f ms, p99 %.1f ms", cp.Propagation.P50, cp.Propagation.P99)
	for _, w := range watches {
		w.mu.Lock()
		cp.RouteEventResubscribes += w.lost
		w.mu.Unlock()
	}

	cp.Endpoints = 100
	logf("control plane: %d endpoints (CreateEndpoint+Join) on one host", cp.Endpoints)
	cp.EndpointJoin, cp.EndpointRemove = endpointLatency(s, nets[0], cp.Endpoints)
	logf("  CreateEndpoint+Join p50 %.1f ms, p99 %.1f ms", cp.EndpointJoin.P50, cp.EndpointJoin.P99)
	cp.Available = true
}

// simRequest is the lease request of simulated host i: its own host ID,
// a public IP in 198.18.0.0/15 (the benchmarking range, never routed; no
// packet is sent to these hosts anyway, only routes are made) and a VTEP MAC.
func simRequest(n lease.Network, i int) lease.AcquireRequest {
	a := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).Next()
	return lease.AcquireRequest{Network: n, TTL: time.Hour, Owner: lease.Owner{
		HostID:   fmt.Sprintf("bench-sim-%04d", i),
		PublicIP: a,
		// The vxlan backend's data, its VTEP MAC.
		BackendData: json.RawMessage(fmt.Sprintf(`{"vtepMAC":"02:fb:00:00:%02x:%02x"}`, byte(i>>8), byte(i))),
	}}
}

// writeLeases acquires leases for simulated hosts from..to-1 with workers
// writers, as hosts joining together would.
func writeLeases(ctx context.Context, reg *lease.Registry, n lease.Network, from, to, workers int) error {
	return forEach(from, to, workers, func(i int) error {
		if _, err := reg.Acquire(ctx, simRequest(n, i)); err != nil {
			return fmt.Errorf("simulated lease %d: %w", i, err)
		}
		return nil
	})
}

// allRouted reports whether every host routes want subnets of the pool.
func allRouted(s *scope, ws []*routeWatch, want int) bool {
	for _, w := range ws {
		n, err := w.list()
		if err != nil {
			s.Fatalf("%v", err)
		}
		if n < want {
			return false
		}
	}
	return true
}

func rssAll(s *scope, pids []int) []int {
	var out []int
	for _, p := range pids {
		kb, err := vmRSS(p)
		if err != nil {
			s.Fatalf("%v", err)
		}
		out = append(out, kb)
	}
	return out
}

// cpuOver is each process's CPU time over d, in % of one core.
func cpuOver(s *scope, pids []int, d time.Duration) []float64 {
	before := make([]float64, len(pids))
	for i, p := range pids {
		c, err := procCPU(p)
		if err != nil {
			s.Fatalf("%v", err)
		}
		before[i] = c
	}
	start := time.Now()
	time.Sleep(d)
	took := time.Since(start).Seconds()
	out := make([]float64, len(pids))
	for i, p := range pids {
		c, err := procCPU(p)
		if err != nil {
			s.Fatalf("%v", err)
		}
		out[i] = round3(100 * (c - before[i]) / took)
	}
	return out
}

// cpMetricsPort is where the control plane's hosts serve FELT_METRICS_ADDR,
// each in its own namespace.
const cpMetricsPort = "9475"

// scrapeEverySecond scrapes every host's /metrics once a second, as a
// Prometheus would, counting the answers and keeping the largest size,
// until the returned func is called.
func scrapeEverySecond(hs []*hosts.Host, scrapes, maxBytes *int) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			for _, h := range hs {
				c := &http.Client{Transport: testkit.NetNSTransport(h.NS), Timeout: 5 * time.Second}
				resp, err := c.Get("http://127.0.0.1:" + cpMetricsPort + "/metrics")
				if err != nil {
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					*scrapes++
					*maxBytes = max(*maxBytes, len(b))
				}
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}
