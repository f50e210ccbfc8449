package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/metrics/metricstest"
	"github.com/felt-net/felt/plugin"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// feltStatus runs `felt status args --socket SOCK` in h's namespace, as a
// user on that host, and returns its exit status and output.
func feltStatus(t *testing.T, h *hosts.Host, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command("ip", testkit.NetNSExec(h.NS, append([]string{feltBin, "status", "--socket", h.Sock}, args...)...)[1:]...)
	out, err := cmd.Output()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out) + string(exit.Stderr)
	}
	t.Fatalf("felt status in %s: %v", h.NS, err)
	return 0, ""
}

// statusJSON is `felt status --json` on h, parsed.
func statusJSON(t *testing.T, h *hosts.Host) (int, plugin.Status) {
	t.Helper()
	code, out := feltStatus(t, h, "--json")
	var st plugin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("felt status --json in %s: exit %d, %v\n%s", h.NS, code, err, out)
	}
	return code, st
}

// peerOf finds the peer with public IP ip in st's only network.
func peerOf(t *testing.T, st plugin.Status, ip string) (plugin.PeerStatus, bool) {
	t.Helper()
	if len(st.Networks) != 1 {
		t.Fatalf("status lists %d networks, want 1: %+v", len(st.Networks), st.Networks)
	}
	for _, p := range st.Networks[0].Peers {
		if p.PublicIP.String() == ip {
			return p, true
		}
	}
	return plugin.PeerStatus{}, false
}

// allReachable: exit 0, and every other host a reachable peer with
// full-size packets passing.
func allReachable(t *testing.T, c *hosts.Cluster, h *hosts.Host) (bool, string) {
	code, st := statusJSON(t, h)
	if code != 0 {
		return false, fmt.Sprintf("exit %d, problems %+v", code, st.Problems)
	}
	for _, o := range c.Hosts {
		if o == h {
			continue
		}
		p, ok := peerOf(t, st, o.IP)
		if !ok || !p.Reachable || !p.MTUOK {
			return false, fmt.Sprintf("peer %s: %+v (found %v)", o.IP, p, ok)
		}
	}
	return true, ""
}

// peerReachableMetric is felt_peer_reachable of peer ip on h.
func peerReachableMetric(t *testing.T, h *hosts.Host, ip string) (float64, bool) {
	t.Helper()
	_, body := hostGet(t, h, "/metrics")
	v, err := metricstest.Parse(body)
	if err != nil {
		t.Fatalf("%s /metrics: %v", h.NS, err)
	}
	x, ok := v[`felt_peer_reachable{peer="`+ip+`",pool="10.42.0.0/16"}`]
	return x, ok
}

// felt status on three vxlan hosts (FORWARD policy DROP, as Docker sets
// it): every peer reachable through the overlay; vxlan from h1 dropped at
// h2 → h1 reports h2 unreachable within 15 s, exits 1, logs it once, and
// its metric reads 0 (h3's view of h2 stays 1); the rule removed → reachable
// again; Consul stopped → the store reported down while the peers stay
// reachable, exit 1.
func TestStatusPeersThroughOverlay(t *testing.T) {
	c := hosts.NewCluster(t, feltBin, 3, "FELT_METRICS_ADDR=127.0.0.1:"+metricsPort)
	for _, h := range c.Hosts {
		testkit.MustRun(t, testkit.NetNSExec(h.NS, "iptables", "-P", "FORWARD", "DROP")...)
	}
	var ctrs []*hosts.Ctr
	for _, h := range c.Hosts {
		n := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16", Opts: map[string]string{"backend": "vxlan"}})
		ctrs = append(ctrs, n.MustRun(t, ""))
	}
	hosts.WaitAllPairs(t, ctrs)
	h1, h2, h3 := c.Hosts[0], c.Hosts[1], c.Hosts[2]
	for _, h := range c.Hosts {
		var why string
		testkit.WaitFor(t, "every peer reachable in felt status on "+h.NS, func() bool {
			var ok bool
			ok, why = allReachable(t, c, h)
			return ok
		})
		_, st := statusJSON(t, h)
		n := st.Networks[0]
		if st.State != plugin.StatusRunning || !st.Store.Reachable || st.Store.Kind != "consul" || !st.InSync || len(st.Drift) != 0 ||
			n.Backend != "vxlan" || n.Endpoints != 1 || n.LeaseExpiry.IsZero() || len(n.Peers) != 2 || st.Host.PublicIP.String() != h.IP ||
			st.Host.Underlay != "ul0" || !st.Probes.On {
			t.Fatalf("%s: status %+v (%s)", h.NS, st, why)
		}
		if code, out := feltStatus(t, h); code != 0 || !strings.Contains(out, "no problems found") || strings.Count(out, "reachable ") < 2 {
			t.Fatalf("%s: felt status: exit %d\n%s", h.NS, code, out)
		}
	}

	// Drop h1's vxlan packets at h2.
	block := []string{"INPUT", "-s", h1.IP, "-p", "udp", "--dport", "4789", "-j", "DROP"}
	testkit.MustRun(t, testkit.NetNSExec(h2.NS, append([]string{"iptables", "-I"}, block...)...)...)
	blocked := true
	unblock := func() {
		if blocked {
			testkit.MustRun(t, testkit.NetNSExec(h2.NS, append([]string{"iptables", "-D"}, block...)...)...)
			blocked = false
		}
	}
	t.Cleanup(func() {
		if blocked {
			_, _ = testkit.Run(testkit.NetNSExec(h2.NS, append([]string{"iptables", "-D"}, block...)...)...)
		}
	})
	start := time.Now()
	var code int
	var out string
	for {
		code, out = feltStatus(t, h1)
		if strings.Contains(out, "peer "+h2.IP+" (host") && strings.Contains(out, "unreachable over the overlay (vxlan)") {
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("h1 does not report h2 unreachable 15 s after its vxlan was dropped:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("h2 reported unreachable after %s", time.Since(start).Round(100*time.Millisecond))
	if code != 1 || !strings.Contains(out, "PROBLEMS:") || !strings.Contains(out, "check: udp/4789 blocked") {
		t.Fatalf("h1's felt status with h2 unreachable: exit %d\n%s", code, out)
	}
	_, st := statusJSON(t, h1)
	if p, _ := peerOf(t, st, h2.IP); p.Reachable || p.Error == "" {
		t.Errorf("h1's view of h2: %+v", p)
	}
	if p, _ := peerOf(t, st, h3.IP); !p.Reachable {
		t.Errorf("h1's view of h3 (not blocked): %+v", p)
	}
	if v, ok := peerReachableMetric(t, h1, h2.IP); !ok || v != 0 {
		t.Errorf("h1: felt_peer_reachable of h2 = %v (present %v), want 0", v, ok)
	}
	if v, ok := peerReachableMetric(t, h3, h2.IP); !ok || v != 1 {
		t.Errorf("h3: felt_peer_reachable of h2 = %v (present %v), want 1", v, ok)
	}
	// Several more probes fail: still one log line (checked at the end).
	time.Sleep(12 * time.Second)

	unblock()
	testkit.WaitFor(t, "h2 reachable again from h1", func() bool { ok, _ := allReachable(t, c, h1); return ok })
	if v, _ := peerReachableMetric(t, h1, h2.IP); v != 1 {
		t.Errorf("h1: felt_peer_reachable of h2 = %v after the rule went, want 1", v)
	}

	// Consul down: the store is reported unreachable, the overlay still
	// carries the probes.
	c.Consul.Stop()
	testkit.WaitFor(t, "store down in h1's status", func() bool {
		_, st := statusJSON(t, h1)
		return !st.Store.Reachable
	})
	code, st = statusJSON(t, h1)
	if code != 1 || st.Store.Detail == "" || !st.Store.LeasesRead {
		t.Fatalf("with Consul down: exit %d, store %+v", code, st.Store)
	}
	for _, p := range st.Networks[0].Peers {
		if !p.Reachable || !p.MTUOK {
			t.Errorf("with Consul down, peer %s: %+v", p.PublicIP, p)
		}
	}
	code, out = feltStatus(t, h1)
	if code != 1 || !strings.Contains(out, "store unreachable (consul "+c.Consul.Addr+")") || !strings.Contains(out, "working from last state") {
		t.Fatalf("felt status with Consul down: exit %d\n%s", code, out)
	}
	ctrs[0].MustPing(t, ctrs[1].Addr.Addr())

	h1.Stop()
	log := h1.Log()
	for line, want := range map[string]int{
		"peer unreachable over the overlay\" pool=10.42.0.0/16 peer=" + h2.IP:     1,
		"peer reachable again over the overlay\" pool=10.42.0.0/16 peer=" + h2.IP: 1,
		"peer unreachable over the overlay\" pool=10.42.0.0/16 peer=" + h3.IP:     0,
	} {
		if got := strings.Count(log, line); got != want {
			t.Errorf("h1's log has %q %d times, want %d", line, got, want)
		}
	}
}

// An MTU black hole: the underlay's switch (the bridge's ports) carries
// 1400 bytes while the hosts' interfaces say 1500, so vxlan's 1500-byte
// packets (a full-size 1450 of the network plus 50) vanish without an
// ICMP error; on an --internal network, FORWARD policy DROP. Small probes
// pass (felt's rules never see them: they are the hosts' own INPUT and
// OUTPUT traffic), full-size ones do not: felt status says "reachable, but
// full-size packets lost" with the MTU hint, exits 1, felt_peer_mtu_ok is
// 0, and the log says it once.
func TestStatusMTUBlackHole(t *testing.T) {
	c := hosts.NewCluster(t, feltBin, 2, "FELT_METRICS_ADDR=127.0.0.1:"+metricsPort, "FELT_PROBE_INTERVAL=1s")
	for _, h := range c.Hosts {
		testkit.MustRun(t, testkit.NetNSExec(h.NS, "iptables", "-P", "FORWARD", "DROP")...)
		h.MustNetwork(t, hosts.NetSpec{Subnet: "10.44.0.0/16", Internal: true, Opts: map[string]string{"backend": "vxlan"}})
	}
	h1, h2 := c.Hosts[0], c.Hosts[1]
	testkit.WaitFor(t, "h2 reachable from h1 with full-size packets", func() bool {
		_, st := statusJSON(t, h1)
		p, _ := peerOf(t, st, h2.IP)
		return p.Reachable && p.MTUOK
	})
	ports := testkit.MustRun(t, "ip", "-n", c.UL, "-o", "link", "show", "master", "br0")
	for _, line := range strings.Split(strings.TrimSpace(ports), "\n") {
		f := strings.Fields(line) // "12: u123-4@if2: <...> mtu 1500 ..."
		if len(f) < 2 {
			t.Fatalf("bridge ports: %q", ports)
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		testkit.MustRun(t, "ip", "-n", c.UL, "link", "set", "dev", name, "mtu", "1400")
	}
	var st plugin.Status
	var code int
	testkit.WaitFor(t, "full-size packets lost, seen from h1", func() bool {
		code, st = statusJSON(t, h1)
		p, _ := peerOf(t, st, h2.IP)
		return !p.MTUOK
	})
	p, _ := peerOf(t, st, h2.IP)
	if !p.Reachable || !strings.Contains(p.Error, "full-size echo (1450 bytes)") || code != 1 {
		t.Fatalf("exit %d, peer %+v; want reachable with full-size packets lost", code, p)
	}
	code, out := feltStatus(t, h1)
	if code != 1 || !strings.Contains(out, "reachable, but full-size packets (1450 bytes) lost: check: MTU: full-size packets lost: lower -o com.docker.network.driver.mtu or fix the underlay MTU") ||
		!strings.Contains(out, "(internal)") || !strings.Contains(out, "LOST") {
		t.Fatalf("felt status: exit %d\n%s", code, out)
	}
	_, body := hostGet(t, h1, "/metrics")
	v, err := metricstest.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	series := `{peer="` + h2.IP + `",pool="10.44.0.0/16"}`
	if v["felt_peer_mtu_ok"+series] != 0 || v["felt_peer_reachable"+series] != 1 {
		t.Errorf("felt_peer_mtu_ok %v, felt_peer_reachable %v; want 0 and 1", v["felt_peer_mtu_ok"+series], v["felt_peer_reachable"+series])
	}
	// More probes, still one line.
	last := p.LastProbe
	testkit.WaitFor(t, "three more probes", func() bool {
		_, st := statusJSON(t, h1)
		p, _ := peerOf(t, st, h2.IP)
		return p.LastProbe.Sub(last) >= 3*time.Second
	})
	h1.Stop()
	if n := strings.Count(h1.Log(), "peer reachable, but full-size packets lost"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
}

// The probes cross every backend: host-gw (plain routes), udp (felt's
// own data path, the TUN) and wireguard (encrypted, wireguard-go here), on
// two hosts each, full-size packets included.
func TestStatusProbesEveryBackend(t *testing.T) {
	for _, backend := range []string{"host-gw", "udp", "wireguard"} {
		t.Run(backend, func(t *testing.T) {
			c := hosts.NewCluster(t, feltBin, 2, "FELT_PROBE_INTERVAL=1s")
			for _, h := range c.Hosts {
				testkit.MustRun(t, testkit.NetNSExec(h.NS, "iptables", "-P", "FORWARD", "DROP")...)
				h.MustNetwork(t, hosts.NetSpec{Subnet: "10.45.0.0/16", Opts: map[string]string{"backend": backend}})
			}
			for _, h := range c.Hosts {
				testkit.WaitFor(t, "every peer reachable with full-size packets, seen from "+h.NS, func() bool {
					ok, why := allReachable(t, c, h)
					if !ok {
						t.Logf("%s: %s", h.NS, why)
					}
					return ok
				})
				_, st := statusJSON(t, h)
				if n := st.Networks[0]; n.Backend != backend || n.MTU != map[string]int{"host-gw": 1500, "udp": 1472, "wireguard": 1420}[backend] {
					t.Errorf("%s: network %+v", h.NS, n)
				}
			}
		})
	}
}
