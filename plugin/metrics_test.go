package plugin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/felt-net/felt/metrics"
	"github.com/felt-net/felt/metrics/metricstest"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
	"github.com/felt-net/felt/testkit/netns"
)

// serveMetricsForTest serves h's metrics on a loopback port until the test
// ends and returns the base URL.
func serveMetricsForTest(t *testing.T, h http.Handler) string {
	t.Helper()
	srv, err := metrics.Listen("127.0.0.1:0", h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + srv.Addr()
}

type alwaysReady struct{}

func (alwaysReady) Ready(context.Context) []metrics.Check { return nil }

// TestAPIRequestsCounted: the socket's server counts each request by call
// and outcome, through real drivers: two CreateNetwork calls that succeed
// (Docker repeats one after a restart) are 2 ok, a refused one an error, a
// malformed body a bad request, an unknown path "other".
func TestAPIRequestsCounted(t *testing.T) {
	netns.Require(t) // the bridge is made in a namespace of the test's own
	w := newFuzzWorld(t)
	tel := NewTelemetry("test")
	w.srv.Observe(tel.Metrics)
	base := serveMetricsForTest(t, metricsHandler(tel))

	create := `/NetworkDriver.CreateNetwork {"NetworkID":"11111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","Options":{"com.docker.network.generic":{"backend":"vxlan"}},"IPv4Data":[{"AddressSpace":"FeltGlobal","Pool":"$SUBNET","Gateway":"$GW"}]}`
	script := strings.Join([]string{
		`/IpamDriver.RequestPool {"AddressSpace":"FeltGlobal","Pool":"10.42.0.0/16","Options":{}}`,
		create,
		create,
		`/NetworkDriver.CreateNetwork {"NetworkID":"../../etc","IPv4Data":[{"Pool":"10.48.0.0/24","Gateway":"10.48.0.1/24"}]}`,
		`/NetworkDriver.Join {"NetworkID": 5`,
		`/NetworkDriver.GwAllocCheck {}`,
		`/no/such/call/1 {}`,
	}, "\n")
	codes := w.run(t, script)
	if want := []int{200, 200, 200, 500, 400, 404, 404}; !equalInts(codes, want) {
		t.Fatalf("answers %v, want %v\n%s", codes, want, w.logs.String())
	}
	v := metricstest.Scrape(t, base+"/metrics")
	for series, want := range map[string]float64{
		`felt_api_requests_total{method="IpamDriver.RequestPool",outcome="ok"}`:         1,
		`felt_api_requests_total{method="NetworkDriver.CreateNetwork",outcome="ok"}`:    2,
		`felt_api_requests_total{method="NetworkDriver.CreateNetwork",outcome="error"}`: 1,
		`felt_api_requests_total{method="NetworkDriver.Join",outcome="bad_request"}`:    1,
		`felt_api_requests_total{method="other",outcome="unknown_call"}`:                2,
		`felt_api_request_duration_seconds_count{method="NetworkDriver.CreateNetwork"}`: 3,
	} {
		if v[series] != want {
			t.Errorf("%s = %v, want %v", series, v[series], want)
		}
	}
	for series := range v {
		if strings.Contains(series, "GwAllocCheck") || strings.Contains(series, "no/such") {
			t.Errorf("an unknown path became a label value: %s", series)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// metricsHandler is the FELT_METRICS_ADDR handler of a server without an App.
func metricsHandler(tel Telemetry) http.Handler {
	return metrics.Handler(tel.Registry, alwaysReady{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// TestReadyFollowsTheStore: /readyz of a felt whose Consul is down from the
// start is 503, naming Consul; 200 once Consul answers; and 200 again when
// Consul goes away after the leases were read (felt works from them). The
// store's watch errors and reconnect show in the metrics meanwhile.
func TestReadyFollowsTheStore(t *testing.T) {
	testkit.NeedRoot(t) // Build needs root (netlink, iptables)
	agent := consul.Start(t, consul.Options{})
	agent.Stop()
	t.Setenv("CONSUL_HTTP_ADDR", agent.Addr) // Consul's client reads it, as in the plugin
	dir := t.TempDir()
	s, err := SettingsFromEnv(func(k string) (string, bool) {
		v, ok := map[string]string{"FELT_STATE_DIR": dir, "FELT_SOCKET": filepath.Join(dir, "felt.sock"),
			"CONSUL_HTTP_ADDR": agent.Addr, "FELT_DOCKER_HOST": "off", "FELT_RESYNC_INTERVAL": "200ms"}[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	app, err := Build(context.Background(), s, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer app.Close() // after cancel: Close waits for the overlay's Run
	defer cancel()
	base := serveMetricsForTest(t, metrics.Handler(app.Gatherer, app, log))
	readyz := func() (int, string) {
		r, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}

	if code, body := readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "store: FAIL: consul "+agent.Addr) ||
		!strings.Contains(body, "no leases read") || !strings.Contains(body, "overlay: ok: in sync with the leases (networks attached: 0)") {
		t.Fatalf("/readyz with Consul down from the start: %d\n%s", code, body)
	}
	// The overlay watches the leases of its networks' pools only: one
	// network is attached, host-gw in a pool no one uses, which makes no
	// device and, with no peer, no route on this host.
	n := overlay.Network{ID: "net-ready", Pool: netip.MustParsePrefix("10.249.0.0/16"), Subnet: netip.MustParsePrefix("10.249.1.0/24"),
		Backend: "host-gw"}
	if err := app.Overlay.Attach(ctx, n); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = app.Overlay.Detach(context.Background(), n) }()
	go app.Overlay.Run(ctx)
	agent.Restart()
	var last string
	testkit.WaitFor(t, "/readyz 200 with Consul up", func() bool {
		code, body := readyz()
		last = body
		return code == http.StatusOK && strings.Contains(body, "store: ok: consul "+agent.Addr+" answers")
	})
	t.Logf("/readyz: %s", last)
	testkit.WaitFor(t, "the leases read", func() bool {
		v := metricstest.Scrape(t, base+"/metrics")
		return v["felt_leases_read"] == 1 && v["felt_overlay_in_sync"] == 1
	})
	agent.Stop()
	code, body := readyz()
	if code != http.StatusOK || !strings.Contains(body, "store: ok: consul "+agent.Addr) || !strings.Contains(body, "working from the leases read before") {
		t.Fatalf("/readyz with Consul gone after the leases were read: %d\n%s", code, body)
	}
	testkit.WaitFor(t, "a watch error counted", func() bool {
		return metricstest.Scrape(t, base+"/metrics")["felt_store_watch_errors_total"] >= 1
	})
	agent.Restart()
	testkit.WaitFor(t, "the watch's reconnect counted", func() bool {
		return metricstest.Scrape(t, base+"/metrics")["felt_store_watch_reconnects_total"] >= 1
	})
}
