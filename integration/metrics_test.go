package integration

import (
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/metrics/metricstest"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// metricsPort is where the hosts serve FELT_METRICS_ADDR, each in its own
// namespace.
const metricsPort = "9475"

// hostGet GETs path of h's metrics server from inside h's namespace.
func hostGet(t *testing.T, h *hosts.Host, path string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: testkit.NetNSTransport(h.NS), Timeout: 10 * time.Second}
	r, err := c.Get("http://127.0.0.1:" + metricsPort + path)
	if err != nil {
		t.Fatalf("%s %s: %v", h.NS, path, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// Two hosts on a udp network with FELT_METRICS_ADDR: each one's /metrics
// shows its lease, both leases known, its peer, the create it served and
// the packets its data path carried; /healthz and /readyz answer 200; and
// `felt leases` on a host lists both leases from Consul.
func TestMetricsOfHosts(t *testing.T) {
	c := hosts.NewCluster(t, feltBin, 2, "FELT_METRICS_ADDR=127.0.0.1:"+metricsPort)
	var ctrs []*hosts.Ctr
	for _, h := range c.Hosts {
		n := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16", Opts: map[string]string{"backend": "udp"}})
		ctrs = append(ctrs, n.MustRun(t, ""))
	}
	hosts.WaitAllPairs(t, ctrs)
	ctrs[0].MustPing(t, ctrs[1].Addr.Addr())

	pool := `pool="10.42.0.0/16"`
	for i, h := range c.Hosts {
		var v metricstest.Values
		testkit.WaitFor(t, "host "+h.NS+" in sync with one peer", func() bool {
			_, body := hostGet(t, h, "/metrics")
			var err error
			if v, err = metricstest.Parse(body); err != nil {
				t.Fatalf("%s /metrics: %v\n%s", h.NS, err, body)
			}
			return v["felt_overlay_in_sync"] == 1 && v[`felt_overlay_peers{backend="udp",`+pool+`}`] == 1
		})
		for series, want := range map[string]float64{
			`felt_leases_held`:  1,
			`felt_leases_known`: 2,
			`felt_leases_read`:  1,
			`felt_api_requests_total{method="IpamDriver.RequestPool",outcome="ok"}`:      1,
			`felt_api_requests_total{method="NetworkDriver.CreateNetwork",outcome="ok"}`: 1,
			`felt_api_requests_total{method="NetworkDriver.Join",outcome="ok"}`:          1,
		} {
			if v[series] != want {
				t.Errorf("host %d: %s = %v, want %v", i, series, v[series], want)
			}
		}
		for _, series := range []string{
			`felt_dataplane_packets_total{backend="udp",direction="tx",` + pool + `}`,
			`felt_dataplane_packets_total{backend="udp",direction="rx",` + pool + `}`,
			`felt_overlay_reconciles_total{outcome="ok"}`,
			`felt_overlay_peer_changes_total{change="added"}`,
			`felt_store_requests_total{op="txn",outcome="ok"}`, // the lease
		} {
			if v[series] < 1 {
				t.Errorf("host %d: %s = %v, want at least 1 (the pings, the lease, the peer)", i, series, v[series])
			}
		}
		if code, body := hostGet(t, h, "/healthz"); code != 200 {
			t.Errorf("host %d /healthz: %d %s", i, code, body)
		}
		if code, body := hostGet(t, h, "/readyz"); code != 200 || !strings.Contains(body, "store: ok: consul "+c.Consul.Addr) {
			t.Errorf("host %d /readyz: %d %s", i, code, body)
		}
	}

	// felt leases, as a user runs it on a host: the binary, in the host's
	// namespace, with the plugin's settings.
	cmd := exec.Command("ip", testkit.NetNSExec(c.Hosts[0].NS, feltBin, "leases")[1:]...)
	cmd.Env = c.Hosts[0].Env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("felt leases: %v\n%s", err, out)
	}
	for _, ctr := range ctrs {
		if !strings.Contains(string(out), ctr.Net.Subnet.String()) {
			t.Errorf("felt leases does not list %s:\n%s", ctr.Net.Subnet, out)
		}
	}
}
