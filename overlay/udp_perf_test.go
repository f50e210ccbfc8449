package overlay_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/felt-net/felt/internal/testnet"
)

// TestUDPThroughput measures with iperf3 the TCP throughput between two
// testbed hosts over the bare underlay, between their containers over the
// udp backend, and for reference over vxlan, and logs the ratios. It only
// runs with FELT_PERF=1: the numbers depend on the machine and on what else
// runs. FELT_PERF_SECONDS (default 5) and FELT_PERF_STREAMS (iperf3 -P)
// tune it.
func TestUDPThroughput(t *testing.T) {
	if os.Getenv("FELT_PERF") != "1" {
		t.Skip("set FELT_PERF=1 to measure")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed")
	}
	tb := newUDPTestbed(t, "192.168.77.1", "192.168.77.2")
	a, b := tb.hosts[0], tb.hosts[1]
	tb.applyAll(t, "udp", false)
	mustPing(t, a, b)

	host := iperf(t, a.ns, b.ns, b.pub.String())
	udp := iperf(t, a.ctr, b.ctr, b.ctrIP().String())
	for _, h := range tb.hosts {
		out, _ := h.ns.Run("ip", "-s", "link", "show", udpDev)
		t.Logf("%s: %+v\n%s", h.id, udpStats(t, h, h.network("udp", false)), out)
		if err := h.b["udp"].Teardown(context.Background(), h.network("udp", false)); err != nil {
			t.Fatal(err)
		}
	}
	tb.applyAll(t, "vxlan", false)
	mustPing(t, a, b)
	vxlan := iperf(t, a.ctr, b.ctr, b.ctrIP().String())
	t.Logf("host to host over the underlay: %.2f Gbit/s", host/1e9)
	t.Logf("container to container over udp: %.2f Gbit/s (%.0f%% of the underlay)", udp/1e9, 100*udp/host)
	t.Logf("container to container over vxlan: %.2f Gbit/s (%.0f%% of the underlay)", vxlan/1e9, 100*vxlan/host)
}

// iperf runs an iperf3 server in srv and a client in cli towards addr, and
// returns the bits per second received.
func iperf(t *testing.T, cli, srv *testnet.NS, addr string) float64 {
	t.Helper()
	server := exec.Command("ip", "netns", "exec", srv.Name, "iperf3", "-s", "-1", "-B", addr)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = server.Process.Kill(); _ = server.Wait() }()
	time.Sleep(300 * time.Millisecond)
	secs := os.Getenv("FELT_PERF_SECONDS")
	if secs == "" {
		secs = "5"
	}
	args := []string{"-c", addr, "-t", secs, "-J"}
	if p := os.Getenv("FELT_PERF_STREAMS"); p != "" {
		args = append(args, "-P", p)
	}
	out, err := cli.Run("iperf3", args...)
	if err != nil {
		t.Fatalf("iperf3 to %s: %v", addr, err)
	}
	var r struct {
		End struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.End.SumReceived.BitsPerSecond == 0 {
		t.Fatalf("iperf3 output (%v):\n%s", err, out)
	}
	t.Logf("iperf3 to %s: %.2f Gbit/s, %d retransmits", addr, r.End.SumReceived.BitsPerSecond/1e9, r.End.SumSent.Retransmits)
	return r.End.SumReceived.BitsPerSecond
}
