package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/metrics"
	"github.com/felt-net/felt/metrics/metricstest"
)

// fakeReady is a Readiness whose answer the test sets.
type fakeReady struct {
	mu     sync.Mutex
	checks []metrics.Check
}

func (f *fakeReady) Ready(context.Context) []metrics.Check {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checks
}

func (f *fakeReady) set(c ...metrics.Check) {
	f.mu.Lock()
	f.checks = c
	f.mu.Unlock()
}

// serve starts a metrics server on a loopback port of its own, stopped at
// cleanup, and returns its base URL.
func serve(t *testing.T, g prometheus.Gatherer, r metrics.Readiness) string {
	t.Helper()
	srv, err := metrics.Listen("127.0.0.1:0", metrics.Handler(g, r, slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + srv.Addr()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// want checks series against their expected values.
func want(t *testing.T, v metricstest.Values, expect map[string]float64) {
	t.Helper()
	for series, x := range expect {
		got, ok := v[series]
		if !ok {
			t.Errorf("%s: absent from the scrape", series)
		} else if got != x {
			t.Errorf("%s = %v, want %v", series, got, x)
		}
	}
}

// TestScrape: what felt's parts report shows in one scrape of /metrics,
// with the values the scenario implies.
func TestScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "1.2.3-test")
	ready := &fakeReady{}
	base := serve(t, reg, ready)

	m.ObserveRequest("NetworkDriver.CreateNetwork", metrics.OutcomeOK, 3*time.Millisecond)
	m.ObserveRequest("NetworkDriver.CreateNetwork", metrics.OutcomeOK, 5*time.Millisecond)
	m.ObserveRequest("NetworkDriver.CreateNetwork", metrics.OutcomeError, time.Millisecond)
	m.Reconciled(10*time.Millisecond, 2, 0)
	m.Reconciled(10*time.Millisecond, 2, 1)
	m.PeersChanged(3, 0)
	m.PeersChanged(1, 1)
	m.SetPeer("10.42.0.0/16", "host-b", true, 2*time.Millisecond)
	m.SetPeer("10.42.0.0/16", "host-c", false, 0)
	m.SetPeerMTU("10.42.0.0/16", "host-b", false)
	m.SetPeerMTU("10.42.0.0/16", "host-c", true)

	// The store wrapper, over a real embedded store.
	ctx := context.Background()
	bolt, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	st := m.Store(bolt)
	if _, err := st.Get(ctx, "felt/nothing"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get of a missing key: %v", err)
	}
	if err := st.Put(ctx, "felt/a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := st.CAS(ctx, "felt/a", []byte("2"), 0); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("CAS creating an existing key: %v", err)
	}
	if _, _, err := st.List(ctx, "felt/"); err != nil {
		t.Fatal(err)
	}

	m.SetState(func() metrics.State {
		return metrics.State{LeasesHeld: 2, LeasesKnown: 5, LeasesRead: true, InSync: true, Networks: []metrics.NetworkState{
			{Pool: "10.42.0.0/16", Backend: "vxlan", Peers: 2},
			{Pool: "10.43.0.0/16", Backend: "udp", Peers: 1, DataPath: &metrics.DataPath{TxPackets: 7, TxBytes: 700, RxPackets: 9, RxBytes: 900, RxDropped: 1}},
			{Pool: "10.44.0.0/16", Backend: "wireguard", Peers: 2, WireGuard: []metrics.WireGuardPeer{
				{Peer: "192.168.77.2", RxBytes: 1500, TxBytes: 2500, LastHandshake: time.Now().Add(-90 * time.Second)},
				{Peer: "192.168.77.3"}, // no handshake yet
			}},
		}}
	})

	v := metricstest.Scrape(t, base+"/metrics")
	want(t, v, map[string]float64{
		`felt_api_requests_total{method="NetworkDriver.CreateNetwork",outcome="ok"}`:    2,
		`felt_api_requests_total{method="NetworkDriver.CreateNetwork",outcome="error"}`: 1,
		`felt_api_request_duration_seconds_count{method="NetworkDriver.CreateNetwork"}`: 3,
		`felt_overlay_reconciles_total{outcome="ok"}`:                                   1,
		`felt_overlay_reconciles_total{outcome="error"}`:                                1,
		`felt_overlay_reconcile_errors_total`:                                           1,
		`felt_overlay_reconcile_duration_seconds_count`:                                 2,
		`felt_overlay_peer_changes_total{change="added"}`:                               4,
		`felt_overlay_peer_changes_total{change="removed"}`:                             1,
		`felt_peer_reachable{peer="host-b",pool="10.42.0.0/16"}`:                        1,
		`felt_peer_reachable{peer="host-c",pool="10.42.0.0/16"}`:                        0,
		`felt_peer_rtt_seconds{peer="host-b",pool="10.42.0.0/16"}`:                      0.002,
		`felt_peer_mtu_ok{peer="host-b",pool="10.42.0.0/16"}`:                           0,
		`felt_peer_mtu_ok{peer="host-c",pool="10.42.0.0/16"}`:                           1,
		`felt_store_requests_total{op="get",outcome="not_found"}`:                       1,
		`felt_store_requests_total{op="put",outcome="ok"}`:                              1,
		`felt_store_requests_total{op="cas",outcome="conflict"}`:                        1,
		`felt_store_requests_total{op="list",outcome="ok"}`:                             1,
		`felt_store_request_duration_seconds_count{op="get"}`:                           1,
		`felt_leases_held`:      2,
		`felt_leases_known`:     5,
		`felt_leases_read`:      1,
		`felt_overlay_in_sync`:  1,
		`felt_overlay_networks`: 3,
		`felt_overlay_peers{backend="vxlan",pool="10.42.0.0/16"}`:                           2,
		`felt_overlay_peers{backend="udp",pool="10.43.0.0/16"}`:                             1,
		`felt_dataplane_packets_total{backend="udp",direction="tx",pool="10.43.0.0/16"}`:    7,
		`felt_dataplane_bytes_total{backend="udp",direction="rx",pool="10.43.0.0/16"}`:      900,
		`felt_dataplane_dropped_total{backend="udp",direction="rx",pool="10.43.0.0/16"}`:    1,
		`felt_build_info{version="1.2.3-test"}`:                                             1,
		`felt_wireguard_peer_receive_bytes_total{peer="192.168.77.2",pool="10.44.0.0/16"}`:  1500,
		`felt_wireguard_peer_transmit_bytes_total{peer="192.168.77.2",pool="10.44.0.0/16"}`: 2500,
		`felt_wireguard_peer_receive_bytes_total{peer="192.168.77.3",pool="10.44.0.0/16"}`:  0,
	})
	if age := v[`felt_wireguard_peer_last_handshake_age_seconds{peer="192.168.77.2",pool="10.44.0.0/16"}`]; age < 90 || age > 150 {
		t.Errorf("192.168.77.2's last handshake %v s ago, want about 90", age)
	}
	if _, ok := v[`felt_wireguard_peer_last_handshake_age_seconds{peer="192.168.77.3",pool="10.44.0.0/16"}`]; ok {
		t.Error("a peer without a handshake has a handshake age")
	}
	if _, ok := v[`felt_wireguard_peer_receive_bytes_total{peer="host-b",pool="10.43.0.0/16"}`]; ok {
		t.Error("a udp network has WireGuard counters")
	}
	if _, ok := v[`felt_peer_rtt_seconds{peer="host-c",pool="10.42.0.0/16"}`]; ok {
		t.Error("an unreachable peer has an RTT")
	}
	if _, ok := v[`felt_dataplane_packets_total{backend="vxlan",direction="tx",pool="10.42.0.0/16"}`]; ok {
		t.Error("a kernel backend has data path counters")
	}
	if _, ok := v["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
	m.ForgetPeer("10.42.0.0/16", "host-b")
	v = metricstest.Scrape(t, base+"/metrics")
	for _, series := range []string{"felt_peer_reachable", "felt_peer_rtt_seconds", "felt_peer_mtu_ok"} {
		if _, ok := v[series+`{peer="host-b",pool="10.42.0.0/16"}`]; ok {
			t.Errorf("a forgotten peer is still reported in %s", series)
		}
	}
}

// TestEveryMetricDocumented: every felt_ metric has a name with felt's
// prefix and a Help text, so that /metrics explains itself.
func TestEveryMetricDocumented(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "dev")
	m.ObserveRequest("Plugin.Activate", metrics.OutcomeOK, time.Millisecond)
	m.SetPeer("10.42.0.0/16", "h", true, time.Millisecond)
	m.SetPeerMTU("10.42.0.0/16", "h", true)
	m.Store(&kvFake{}).Get(context.Background(), "k")
	m.SetState(func() metrics.State {
		return metrics.State{Networks: []metrics.NetworkState{{Pool: "10.43.0.0/16", Backend: "udp", DataPath: &metrics.DataPath{}},
			{Pool: "10.44.0.0/16", Backend: "wireguard", WireGuard: []metrics.WireGuardPeer{{Peer: "h", LastHandshake: time.Now()}}}}}
	})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	felt := 0
	for _, f := range fams {
		name := f.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		felt++
		if !strings.HasPrefix(name, "felt_") {
			t.Errorf("metric %s lacks the felt_ prefix", name)
		}
		if len(f.GetHelp()) < 20 {
			t.Errorf("metric %s: help %q says too little", name, f.GetHelp())
		}
	}
	if felt < 20 {
		t.Errorf("only %d felt metrics gathered", felt)
	}
}

// kvFake is a store whose Wait fails while fail is set.
type kvFake struct {
	kv.Store
	mu   sync.Mutex
	fail bool
}

func (f *kvFake) Get(context.Context, string) (kv.Pair, error) { return kv.Pair{}, kv.ErrNotFound }

func (f *kvFake) Wait(ctx context.Context, prefix string, index uint64) ([]kv.Pair, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, 0, errors.New("consul 127.0.0.1:1: connection refused")
	}
	return nil, index + 1, nil
}

// TestStoreWatchReconnects: a watch that fails counts errors, and the
// first answer after them one reconnect; a Wait its caller ended counts
// nothing.
func TestStoreWatchReconnects(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "dev")
	f := &kvFake{}
	st := m.Store(f)
	ctx := context.Background()
	mustWait := func(fail bool) {
		t.Helper()
		f.mu.Lock()
		f.fail = fail
		f.mu.Unlock()
		if _, _, err := st.Wait(ctx, "felt/leases/", 1); (err != nil) != fail {
			t.Fatalf("Wait: %v", err)
		}
	}
	mustWait(false)
	mustWait(true)
	mustWait(true)
	mustWait(false)
	mustWait(false)
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	f.fail = true
	if _, _, err := st.Wait(canceled, "felt/leases/", 1); err == nil {
		t.Fatal("Wait failing with its context ended: no error")
	}
	v := metricstest.Scrape(t, serve(t, reg, &fakeReady{})+"/metrics")
	want(t, v, map[string]float64{
		`felt_store_watch_errors_total`:                        2,
		`felt_store_watch_reconnects_total`:                    1,
		`felt_store_requests_total{op="wait",outcome="ok"}`:    3,
		`felt_store_requests_total{op="wait",outcome="error"}`: 2,
	})
	if _, ok := v[`felt_store_request_duration_seconds_count{op="wait"}`]; ok {
		t.Error("blocking queries are timed as store latency")
	}
}

// TestHealthAndReadiness: /healthz answers while the process serves;
// /readyz is 503 while a check fails and 200 once all pass, each check on a
// line of its body.
func TestHealthAndReadiness(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg, "dev")
	ready := &fakeReady{}
	base := serve(t, reg, ready)
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	ready.set(metrics.Check{Name: "store", OK: false, Detail: "consul 127.0.0.1:1: connection refused"}, metrics.Check{Name: "overlay", OK: true, Detail: "0 networks in sync"})
	code, body := get(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "store: FAIL: consul 127.0.0.1:1: connection refused\n") || !strings.Contains(body, "overlay: ok: 0 networks in sync\n") {
		t.Fatalf("/readyz with the store down: %d %q", code, body)
	}
	ready.set(metrics.Check{Name: "store", OK: true, Detail: "consul answers"}, metrics.Check{Name: "overlay", OK: true, Detail: "0 networks in sync"})
	if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, "store: ok: consul answers") {
		t.Fatalf("/readyz with all well: %d %q", code, body)
	}
	if code, _ := get(t, base+"/other"); code != http.StatusNotFound {
		t.Fatalf("/other: %d", code)
	}
}

// TestListenNamesTheSetting: a port in use fails at start, naming
// FELT_METRICS_ADDR.
func TestListenNamesTheSetting(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, err := metrics.Listen("127.0.0.1:0", metrics.Handler(reg, &fakeReady{}, slog.Default()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	_, err = metrics.Listen(srv.Addr(), http.NotFoundHandler())
	if err == nil || !strings.Contains(err.Error(), "FELT_METRICS_ADDR="+srv.Addr()) {
		t.Fatalf("second Listen on %s: %v; want an error naming FELT_METRICS_ADDR", srv.Addr(), err)
	}

}
