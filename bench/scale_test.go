package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// The scale part's sizes: -scale-leases N (go test ... -args -scale-leases
// 2000) is the large stage; the small one is always 1,000, as the
// control-plane part's. -scale-watchers lists the numbers of simulated
// watchers.
var (
	scaleLeases   = flag.Int("scale-leases", 10000, "scale part: simulated leases at the large stage (the small one is 1,000)")
	scaleJoiners  = flag.Int("scale-joiners", 32, "scale part: Acquire calls at a time (hosts joining at once)")
	scaleWatchers = flag.String("scale-watchers", "0,10,50,100", "scale part: numbers of simulated watching hosts, comma-separated")
)

const (
	// A /10 of /24s holds 16,384 subnets: room for 10,000 leases and the
	// ones each stage adds. Apart from the control-plane part's 10.64.0.0/13,
	// the networks part's 10.64.0.0/11, the data plane's 10.41-48.0.0/16 and
	// the underlay's 192.168.77-78.0/24.
	scalePool  = "10.128.0.0/10"
	scaleSmall = 1000
	// scaleAcquireShare: a fifth of each stage's leases join through
	// Acquire, timed, -scale-joiners at a time (hosts joining at once: the
	// store's writes are each a Raft commit, so the rate follows the
	// joiners), as the last of the stage's leases (the rest are
	// bulk-loaded): 200 at 1,000 leases, 2,000 at 10,000, enough to show a
	// sustained rate.
	scaleAcquireShare  = 5
	scaleAcquireBudget = 90 * time.Second
	// scaleChanges: single lease changes (a new lease, written straight
	// to the store) at each stage, one at a time, each waited for on every
	// host; felt's CPU and Consul's bytes are counted over them. Bounded
	// by scaleChangeBudget.
	scaleChanges      = 100
	scaleChangeBudget = 90 * time.Second
	// scaleRouteBound: a change (or new lease) not routed on every host
	// after this is counted as such and ends that series; at 10,000
	// leases one took over a minute on a loaded machine.
	scaleRouteBound = 3 * time.Minute
	scaleQuiet      = 10 * time.Second
	// scaleNewLeaseBudget bounds the new leases through Acquire (at least
	// 3): at 10,000 leases each Acquire alone takes seconds.
	scaleNewLeaseBudget = 120 * time.Second
	scaleWriters        = 8
)

// Scale is the control plane at 1,000 and 10,000 leases (issue #14): three
// real hosts, each talking to Consul through its own counting proxy, then
// simulated watchers without felt.
type Scale struct {
	Available bool         `json:"available"`
	Reason    string       `json:"reason,omitempty"`
	RealHosts int          `json:"real_hosts"`
	Pool      string       `json:"pool"`
	Backend   string       `json:"backend"`
	Stages    []ScaleStage `json:"stages"`
	Watchers  WatcherLoad  `json:"simulated_watchers"`
}

// ScaleStage is what one size measured. Leases counts the simulated ones
// present when felt's CPU and Consul's bytes were measured (the changes
// add ScaleStage.Changes more, the new-lease test NewLeases more).
type ScaleStage struct {
	Leases int `json:"simulated_leases"`
	// Bulk: leases written by the bulk loader (store writes, not felt's
	// join path: see bulkload_test.go), 8 writers; BulkRate per second.
	// RoutedAfterLastBulkS: from the last of those writes until every
	// real host routes every lease; RoutedAfterFirstBulkS from the first.
	Bulk                  int     `json:"bulk_loaded"`
	BulkS                 float64 `json:"bulk_load_s"`
	BulkRate              float64 `json:"bulk_load_leases_per_s"`
	RoutedAfterLastBulkS  float64 `json:"routed_everywhere_after_last_bulk_write_s"`
	RoutedAfterFirstBulkS float64 `json:"routed_everywhere_after_first_bulk_write_s"`
	// Acquires: leases joined through lease.Registry.Acquire (felt's
	// join path), -scale-joiners at a time, with the bulk-loaded ones present;
	// AcquireRate per second, AcquireCall each call's time;
	// RoutedAfterLastAcquireS until every host routes them all.
	Acquires                int     `json:"acquires"`
	AcquireRate             float64 `json:"acquire_leases_per_s"`
	AcquireCall             Dist    `json:"acquire_call"`
	RoutedAfterLastAcquireS float64 `json:"routed_everywhere_after_last_acquire_s"`
	RSSKiB                  []int   `json:"felt_rss_kib"`
	// Quiet: each felt's CPU (% of a core) and Consul's over QuietS
	// seconds with nothing changing, and the bytes Consul sent each host
	// meanwhile (renewals, resyncs, peer probing's reads if any).
	QuietS             float64   `json:"quiet_s"`
	QuietFeltCPU       []float64 `json:"felt_quiet_cpu_percent"`
	QuietConsulCPU     float64   `json:"consul_quiet_cpu_percent"`
	QuietBytesPerHostS []float64 `json:"consul_bytes_per_s_per_host_quiet"`
	// Changes: new leases written one at a time (bulk loader), each
	// waited for on every host (Unrouted: the one that was not, within
	// RouteBoundS, which ended the series; NewLeasesUnrouted likewise); WriteToRoute from the write until its
	// route is on every host. Over their window (ChangesS): each felt's CPU
	// per change, raw and minus its quiet rate, Consul's CPU per change,
	// and the bytes of lease reads Consul sent each host per change
	// (BytesPerChange, what the hosts' proxies counted; LeaseReads the
	// requests behind them, per change, per host). Traffic is every class
	// of request of host 1 over the window, for the detail.
	Changes                int                `json:"changes"`
	Unrouted               int                `json:"changes_not_routed_within_bound"`
	NewLeasesUnrouted      int                `json:"new_leases_not_routed_within_bound"`
	RouteBoundS            float64            `json:"route_bound_s"`
	ChangesS               float64            `json:"changes_s"`
	WriteToRoute           Dist               `json:"lease_write_to_route_on_every_host"`
	FeltCPUMSPerChange     []float64          `json:"felt_cpu_ms_per_change"`
	FeltCPUMSPerChangeNet  []float64          `json:"felt_cpu_ms_per_change_minus_quiet"`
	ConsulCPUMSPerChange   float64            `json:"consul_cpu_ms_per_change"`
	BytesPerChange         []int64            `json:"consul_lease_read_bytes_per_change_per_host"`
	LeaseReadsPerChange    []float64          `json:"consul_lease_reads_per_change_per_host"`
	Traffic                map[string]traffic `json:"consul_traffic_host1_during_changes"`
	NewLeases              int                `json:"new_leases"`
	Propagation            Dist               `json:"new_lease_to_route_on_every_peer"`
	RouteEventResubscribes int                `json:"route_event_resubscribes"`
}

// scaleRun is the state the stages share.
type scaleRun struct {
	s       *scope
	ctx     context.Context
	c       *hosts.Cluster
	proxies []*consulProxy
	store   kv.Store
	reg     *lease.Registry
	rec     lease.Network
	pool    netip.Prefix
	watches []*routeWatch
	pids    []int
	consul  int // Consul's pid
	seq     *subnetSeq
	count   int // simulated leases in the pool
	next    int // the next simulated host's number (numbers may skip)
}

// controlPlaneScale runs three felt hosts on a vxlan network, measures at
// 1,000 simulated leases, grows the pool to -scale-leases and measures
// again, then stops felt and measures Consul's load against simulated
// watchers. It fills sc as it goes.
func controlPlaneScale(s *scope, bin string, sc *Scale) {
	*sc = Scale{RealHosts: realHosts, Pool: scalePool, Backend: "vxlan"}
	large := *scaleLeases
	if large < 2*scaleSmall || large > 15000 {
		s.Fatalf("-scale-leases %d: between %d and 15000 (the pool's /24s)", large, 2*scaleSmall)
	}
	counts, err := parseCounts(*scaleWatchers)
	if err != nil {
		s.Fatalf("-scale-watchers: %v", err)
	}
	x := &scaleRun{s: s, ctx: context.Background(), pool: netip.MustParsePrefix(scalePool)}
	x.c = proxiedCluster(s, bin, realHosts, &x.proxies)
	var nets []*hosts.Net
	for _, h := range x.c.Hosts {
		nets = append(nets, h.MustNetwork(s, hosts.NetSpec{Subnet: scalePool, Opts: map[string]string{"backend": "vxlan"}}))
	}
	store, err := consulkv.New(x.c.ConsulConfig())
	if err != nil {
		s.Fatalf("consul client: %v", err)
	}
	x.store = store
	x.reg = lease.NewRegistry(store, "felt/", nil)
	if x.rec, err = x.reg.GetNetwork(x.ctx, x.pool); err != nil {
		s.Fatalf("network record of %s: %v", x.pool, err)
	}
	for _, h := range x.c.Hosts {
		x.watches = append(x.watches, watchRoutes(s, h.NS, x.pool))
	}
	if x.pids, err = feltPIDs(x.c.Hosts); err != nil {
		s.Fatalf("%v", err)
	}
	if x.consul, err = consulPID(x.c.Consul.DataDir); err != nil {
		s.Fatalf("%v", err)
	}
	for i, n := range nets { // the real hosts route each other (not themselves)
		others := slices.Delete(slices.Clone(x.watches), i, i+1)
		if _, err := waitAll(others, n.Subnet, 30*time.Second); err != nil {
			s.Fatalf("real hosts: %v", err)
		}
	}
	ls, err := x.reg.Leases(x.ctx, x.pool)
	if err != nil {
		s.Fatalf("%v", err)
	}
	x.seq = newSubnetSeq(x.pool, x.rec.SubnetLen)
	x.seq.markTaken(ls)

	for _, size := range []int{scaleSmall, large} {
		sc.Stages = append(sc.Stages, ScaleStage{})
		x.stage(size, &sc.Stages[len(sc.Stages)-1])
	}
	for _, w := range x.watches {
		w.mu.Lock()
		sc.Stages[len(sc.Stages)-1].RouteEventResubscribes += w.lost
		w.mu.Unlock()
	}

	// Simulated watchers, with the real hosts stopped: Consul's CPU is then
	// the writes' and the watchers' alone, and felt does not compete for
	// the two cores.
	for _, h := range x.c.Hosts {
		h.Stop()
	}
	sc.Watchers = watcherLoad(s, x.c, x.store, x.consul, counts, leaseWatchWatcher(x.pool))
	sc.Available = true
}

// stage grows the pool to size simulated leases (bulk, then Acquire) and
// measures.
func (x *scaleRun) stage(size int, st *ScaleStage) {
	s := x.s
	st.Leases = size
	// The bulk: all but the last fifth, which joins through Acquire.
	acquires := size / scaleAcquireShare
	st.Bulk = size - acquires - x.count
	logf("scale: %d leases: bulk-loading %d", size, st.Bulk)
	start := time.Now()
	last, err := bulkLoad(x.ctx, x.store, "felt/", x.rec, x.seq, x.next, x.next+st.Bulk, scaleWriters)
	if err != nil {
		s.Fatalf("%v", err)
	}
	x.next += st.Bulk
	x.count += st.Bulk
	st.BulkS = round3(last.Sub(start).Seconds())
	st.BulkRate = round3(float64(st.Bulk) / max(st.BulkS, 1e-3))
	at := x.waitRouted(x.count)
	st.RoutedAfterLastBulkS = round3(at.Sub(last).Seconds())
	st.RoutedAfterFirstBulkS = round3(at.Sub(start).Seconds())
	logf("  %d written in %.1f s (%.0f/s); every host routes them %.2f s after the last write", st.Bulk, st.BulkS, st.BulkRate, st.RoutedAfterLastBulkS)

	logf("scale: up to %d Acquire calls with %d leases present, %d at a time, for at most %s", acquires, x.count+realHosts, *scaleJoiners, scaleAcquireBudget)
	calls, next, took, last, err := acquireTimed(x.ctx, x.reg, x.rec, x.next, x.next+acquires, *scaleJoiners, scaleAcquireBudget)
	if err != nil {
		s.Fatalf("%v", err)
	}
	x.next = next
	x.count += len(calls)
	st.Acquires = len(calls)
	st.AcquireRate = round3(float64(len(calls)) / took.Seconds())
	st.AcquireCall = distOf(calls, "ms")
	at = x.waitRouted(x.count)
	st.RoutedAfterLastAcquireS = round3(at.Sub(last).Seconds())
	logf("  %d Acquires, %.1f/s, a call p50 %.0f ms; every host routes them %.2f s after the last", len(calls), st.AcquireRate, st.AcquireCall.P50, st.RoutedAfterLastAcquireS)
	if short := size - x.count; short > 0 { // the budget ran out: the rest bulk-loaded, so the stage has its size
		if _, err := bulkLoad(x.ctx, x.store, "felt/", x.rec, x.seq, x.next, x.next+short, scaleWriters); err != nil {
			s.Fatalf("%v", err)
		}
		x.next += short
		x.count += short
		st.Bulk += short
		x.waitRouted(x.count)
	}
	ls, err := checkLoaded(x.ctx, x.reg, x.pool, x.count)
	if err != nil {
		s.Fatalf("%v", err)
	}
	x.seq.markTaken(ls)

	// Let the reconciles the burst queued finish.
	time.Sleep(3 * time.Second)
	st.RSSKiB = rssAll(s, x.pids)

	logf("scale: %.0f quiet seconds with %d leases", scaleQuiet.Seconds(), x.count+realHosts)
	before := x.snapshots()
	cpus := append(slices.Clone(x.pids), x.consul)
	st.QuietS = scaleQuiet.Seconds()
	pct := cpuOver(s, cpus, scaleQuiet)
	st.QuietFeltCPU, st.QuietConsulCPU = pct[:len(x.pids)], pct[len(x.pids)]
	for i, p := range x.proxies {
		t := trafficSince(before[i], p.snapshot())
		var sum int64
		for _, v := range t {
			sum += v.Bytes
		}
		st.QuietBytesPerHostS = append(st.QuietBytesPerHostS, round3(float64(sum)/scaleQuiet.Seconds()))
	}
	logf("  felt CPU %v %% of a core, Consul %.1f %%", st.QuietFeltCPU, st.QuietConsulCPU)

	x.changes(st)

	logf("scale: %d new leases through Acquire, one at a time, for at most %s", newLeases, scaleNewLeaseBudget)
	var prop []time.Duration
	for t := time.Now(); len(prop) < newLeases && (len(prop) < 3 || time.Since(t) < scaleNewLeaseBudget); {
		t0 := time.Now()
		l, err := x.reg.Acquire(x.ctx, simRequest(x.rec, x.next))
		if err != nil {
			s.Fatalf("new lease %d: %v", x.next, err)
		}
		x.next++
		x.count++
		x.seq.markTaken([]lease.Lease{l})
		at, err := waitAll(x.watches, l.Subnet, scaleRouteBound)
		if err != nil {
			logf("  new lease %s: %v; no more new leases", l.Subnet, err)
			st.NewLeasesUnrouted++
			break
		}
		prop = append(prop, max(at.Sub(t0), 0))
	}
	st.NewLeases = len(prop)
	st.Propagation = distOf(prop, "ms")
	logf("  lease → route on every host: p50 %.0f ms, p99 %.0f ms", st.Propagation.P50, st.Propagation.P99)
}

// changes writes single new leases one at a time, each waited for on
// every host, and counts felt's CPU, Consul's CPU and the bytes Consul
// sent each host over them.
func (x *scaleRun) changes(st *ScaleStage) {
	s := x.s
	logf("scale: up to %d single lease changes (new leases), one at a time", scaleChanges)
	st.RouteBoundS = scaleRouteBound.Seconds()
	before := x.snapshots()
	cpus := append(slices.Clone(x.pids), x.consul)
	cpu0 := procsCPUEach(s, cpus)
	start := time.Now()
	var w2r []time.Duration
	n := 0 // changes written
	for n < scaleChanges && (n < 2 || time.Since(start) < scaleChangeBudget) {
		t0 := time.Now()
		subnet, err := putSimLease(x.ctx, x.store, "felt/", x.rec, x.seq, x.next)
		if err != nil {
			s.Fatalf("%v", err)
		}
		x.next++
		x.count++
		n++
		at, err := waitAll(x.watches, subnet, scaleRouteBound)
		if err != nil {
			// A result, not a failure of the part: counted over what was
			// written, and the part goes on to the simulated watchers.
			logf("  change %d: %v; no more changes", n, err)
			st.Unrouted++
			break
		}
		w2r = append(w2r, max(at.Sub(t0), 0))
	}
	// The host that routed last may still be reading the answer's tail
	// (and its Wait's next read): a moment for the counts to settle.
	time.Sleep(500 * time.Millisecond)
	took := time.Since(start)
	cpu1 := procsCPUEach(s, cpus)
	st.Changes, st.ChangesS = n, round3(took.Seconds())
	st.WriteToRoute = distOf(w2r, "ms")
	for i := range x.pids {
		used := cpu1[i] - cpu0[i]
		st.FeltCPUMSPerChange = append(st.FeltCPUMSPerChange, round3(1000*used/float64(n)))
		quiet := st.QuietFeltCPU[i] / 100 * took.Seconds()
		st.FeltCPUMSPerChangeNet = append(st.FeltCPUMSPerChangeNet, round3(1000*max(used-quiet, 0)/float64(n)))
	}
	st.ConsulCPUMSPerChange = round3(1000 * (cpu1[len(x.pids)] - cpu0[len(x.pids)]) / float64(n))
	for i, p := range x.proxies {
		t := trafficSince(before[i], p.snapshot())
		r := leaseReads(t)
		st.BytesPerChange = append(st.BytesPerChange, r.Bytes/int64(n))
		st.LeaseReadsPerChange = append(st.LeaseReadsPerChange, round3(float64(r.Requests)/float64(n)))
		if i == 0 {
			st.Traffic = t
		}
	}
	logf("  %d changes in %.1f s: write → route on every host p50 %.0f ms, p99 %.0f ms", n, took.Seconds(), st.WriteToRoute.P50, st.WriteToRoute.P99)
	logf("  per change: felt CPU %v ms (minus quiet %v), Consul CPU %.1f ms, lease-read bytes per host %v (%v reads)",
		st.FeltCPUMSPerChange, st.FeltCPUMSPerChangeNet, st.ConsulCPUMSPerChange, st.BytesPerChange, st.LeaseReadsPerChange)
}

func (x *scaleRun) snapshots() []map[string]traffic {
	var out []map[string]traffic
	for _, p := range x.proxies {
		out = append(out, p.snapshot())
	}
	return out
}

// waitRouted waits until every host routes want simulated leases (and the
// other real hosts) and returns when the last route appeared (by route
// events; a listing's time if the events missed it).
func (x *scaleRun) waitRouted(want int) time.Time {
	for deadline := time.Now().Add(10 * time.Minute); !allRouted(x.s, x.watches, want+realHosts-1); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			x.s.Fatalf("routes to %d simulated leases not on every host after 10 minutes", want)
		}
	}
	var latest time.Time
	for _, w := range x.watches {
		w.mu.Lock()
		for _, t := range w.seen {
			if t.After(latest) {
				latest = t
			}
		}
		w.mu.Unlock()
	}
	return latest
}

// acquireTimed acquires leases for simulated hosts from..to-1 with workers
// writers, timing each call, until budget is used up; it says the number
// after the highest it acquired (one skipped at the budget leaves a gap),
// how long all took and when the last finished.
func acquireTimed(ctx context.Context, reg *lease.Registry, n lease.Network, from, to, workers int, budget time.Duration) ([]time.Duration, int, time.Duration, time.Time, error) {
	var mu sync.Mutex
	var calls []time.Duration
	var last time.Time
	next := from
	start := time.Now()
	err := forEach(from, to, workers, func(i int) error {
		if time.Since(start) > budget {
			return errBudget
		}
		t0 := time.Now()
		if _, err := reg.Acquire(ctx, simRequest(n, i)); err != nil {
			return fmt.Errorf("simulated lease %d: %w", i, err)
		}
		mu.Lock()
		calls = append(calls, time.Since(t0))
		last = time.Now()
		next = max(next, i+1)
		mu.Unlock()
		return nil
	})
	if errors.Is(err, errBudget) {
		err = nil
	}
	return calls, next, time.Since(start), last, err
}

// errBudget stops forEach when a time budget is used up.
var errBudget = errors.New("time budget used up")

// proxiedCluster starts a cluster of n felt hosts, each talking to Consul
// through its own counting proxy (appended to proxies). The harness gives
// every host the cluster's Env; it is set per host around AddHost.
func proxiedCluster(s *scope, bin string, n int, proxies *[]*consulProxy) *hosts.Cluster {
	// The proxies all reach Consul from one address, where real hosts each
	// have their own: Consul's limit of concurrent connections per client
	// address (200; every blocking query holds one, and a host's lease watch
	// may hold 64) is raised so that it does not count the proxies as one.
	c := hosts.NewClusterWith(s, hosts.ClusterOptions{Binary: bin, Env: hostEnv,
		ConsulArgs: []string{"-hcl", "limits { http_max_conns_per_client = 2000 }"}})
	base := c.Env
	for range n {
		p := startConsulProxy(s, c)
		*proxies = append(*proxies, p)
		c.Env = testkit.SetEnv(base, "CONSUL_HTTP_ADDR="+p.Addr)
		c.AddHost()
	}
	c.Env = base
	return c
}

// consulPID finds the Consul agent whose data directory is dir.
func consulPID(dir string) (int, error) {
	want := []byte("-data-dir\x00" + dir + "\x00")
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	for _, d := range procs {
		cmd, err := os.ReadFile(d + "/cmdline")
		if err != nil || !bytes.Contains(cmd, want) {
			continue
		}
		if exe, err := os.Readlink(d + "/exe"); err == nil && filepath.Base(exe) == "consul" {
			return strconv.Atoi(filepath.Base(d))
		}
	}
	return 0, fmt.Errorf("consul process with -data-dir %s not found in /proc", dir)
}

// procsCPUEach is procCPU of each pid, in seconds.
func procsCPUEach(s *scope, pids []int) []float64 {
	out := make([]float64, len(pids))
	for i, p := range pids {
		c, err := procCPU(p)
		if err != nil {
			s.Fatalf("%v", err)
		}
		out[i] = c
	}
	return out
}

// parseCounts parses "0,10,50".
func parseCounts(v string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 1000 {
			return nil, fmt.Errorf("%q: want numbers from 0 to 1000", f)
		}
		out = append(out, n)
	}
	return out, nil
}
