package udp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/testkit/netns"
	"github.com/felt-net/felt/testkit/testbed"
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
	a, b := tb.Hosts[0], tb.Hosts[1]
	tb.ApplyAll(t, "udp", false)
	testbed.MustPing(t, a, b)

	host := iperf(t, a.NS, b.NS, b.Pub.String())
	hostLat := pingPong(t, a.NS, b.NS, b.Pub)
	udp := iperf(t, a.Ctr, b.Ctr, b.CtrIP().String())
	udpLat := pingPong(t, a.Ctr, b.Ctr, b.CtrIP())
	for _, h := range tb.Hosts {
		out, _ := h.NS.Run("ip", "-s", "link", "show", udpDev)
		if snmp, err := h.NS.Run("grep", "^Udp:", "/proc/net/snmp"); err == nil {
			out += snmp
		}
		t.Logf("%s: %+v\n%s", h.ID, udpStats(t, h, h.Network("udp", false)), out)
		if err := h.B["udp"].Teardown(context.Background(), h.Network("udp", false)); err != nil {
			t.Fatal(err)
		}
	}
	tb.ApplyAll(t, "vxlan", false)
	testbed.MustPing(t, a, b)
	vxlan := iperf(t, a.Ctr, b.Ctr, b.CtrIP().String())
	vxlanLat := pingPong(t, a.Ctr, b.Ctr, b.CtrIP())
	t.Logf("host to host over the underlay: %.2f Gbit/s, round trip %v", host/1e9, hostLat)
	t.Logf("container to container over udp: %.2f Gbit/s (%.0f%% of the underlay), round trip %v", udp/1e9, 100*udp/host, udpLat)
	t.Logf("container to container over vxlan: %.2f Gbit/s (%.0f%% of the underlay), round trip %v", vxlan/1e9, 100*vxlan/host, vxlanLat)
}

// latency is the median and 99th percentile of a set of round trips.
type latency struct{ p50, p99 time.Duration }

func (l latency) String() string {
	return fmt.Sprintf("p50 %v p99 %v", l.p50.Round(time.Microsecond), l.p99.Round(time.Microsecond))
}

// pingPong measures TCP request/response round trips of one byte from a
// connection opened in cli to a server in srv listening on addr. Both ends
// run in a child process (TestPingPongHelper), as in the bench, where the
// data path is another process than the one measuring: in this one, the
// measuring goroutines would keep the data path's runtime awake.
func pingPong(t *testing.T, cli, srv *netns.NS, addr netip.Addr) latency {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPingPongHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "FELT_PINGPONG="+cli.Name+" "+srv.Name+" "+addr.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ping-pong helper: %v\n%s", err, out)
	}
	var l latency
	for _, line := range strings.Split(string(out), "\n") {
		if _, err := fmt.Sscanf(line, "RTT %d %d", &l.p50, &l.p99); err == nil {
			return l
		}
	}
	t.Fatalf("ping-pong helper output:\n%s", out)
	return l
}

// TestPingPongHelper is pingPong's child process.
func TestPingPongHelper(t *testing.T) {
	arg := strings.Fields(os.Getenv("FELT_PINGPONG"))
	if len(arg) != 3 {
		t.Skip("run by pingPong")
	}
	const rounds, warmup = 5000, 500
	handle := func(name string) vnetns.NsHandle {
		h, err := vnetns.GetFromName(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	cli, srv := handle(arg[0]), handle(arg[1])
	ap := net.JoinHostPort(arg[2], "5002")
	var ln net.Listener
	if err := nsutil.Do(srv, func() (err error) { ln, err = net.Listen("tcp4", ap); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		b := make([]byte, 1)
		for {
			if _, err := conn.Read(b); err != nil {
				return
			}
			if _, err := conn.Write(b); err != nil {
				return
			}
		}
	}()
	var conn net.Conn
	if err := nsutil.Do(cli, func() (err error) { conn, err = net.DialTimeout("tcp4", ap, 5*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	rtts := make([]time.Duration, 0, rounds)
	b := []byte{1}
	for i := range rounds + warmup {
		start := time.Now()
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, b); err != nil {
			t.Fatal(err)
		}
		if i >= warmup {
			rtts = append(rtts, time.Since(start))
		}
	}
	slices.Sort(rtts)
	fmt.Printf("RTT %d %d\n", rtts[len(rtts)/2], rtts[len(rtts)*99/100])
}

// iperf runs an iperf3 server in srv and a client in cli towards addr, and
// returns the bits per second received.
func iperf(t *testing.T, cli, srv *netns.NS, addr string) float64 {
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
