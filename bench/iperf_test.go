package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/felt-net/felt/testkit"
)

const (
	iperfPort    = "5201"
	iperfSeconds = 10
	// iperfRuns is how many times each path and stream count is measured;
	// the run with the median throughput is reported. One 10 s run on this
	// shared 2-core machine varies by tens of percent, the bare baseline
	// included, which made single-run ratios swing as much.
	iperfRuns = 3
)

// Throughput is one iperf3 run.
type Throughput struct {
	Streams     int     `json:"streams"`
	Seconds     int     `json:"seconds"`
	Gbps        float64 `json:"gbit_per_s"` // received, as the receiver counted it
	Bytes       int64   `json:"bytes"`
	Retransmits int     `json:"retransmits"`
	// SysCPUPerGB is the whole machine's non-idle CPU time during the run
	// (both iperf3 ends, the kernel's packet processing, felt, and anything
	// else running) per 10^9 bytes received.
	SysCPUPerGB float64 `json:"system_cpu_s_per_gb"`
	// FeltCPUPerGB is the felt daemons' own CPU per 10^9 bytes: near zero
	// for kernel backends, the userspace data path's cost for udp and for
	// wireguard without the kernel module (wireguard-go inside felt).
	FeltCPUPerGB float64 `json:"felt_cpu_s_per_gb"`
	RatioToBare  float64 `json:"ratio_to_bare,omitempty"`
	// Runs is the throughput of every run, in order; the other fields are
	// those of the median one.
	Runs []float64 `json:"runs_gbit_per_s,omitempty"`
}

// medianRun runs measure n times and returns the run with the median
// throughput, holding every run's throughput in Runs.
func medianRun(n int, measure func() (Throughput, error)) (Throughput, error) {
	var runs []Throughput
	for range n {
		r, err := measure()
		if err != nil {
			return r, err
		}
		runs = append(runs, r)
	}
	all := make([]float64, len(runs))
	for i, r := range runs {
		all[i] = r.Gbps
	}
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b Throughput) int { return cmp.Compare(a.Gbps, b.Gbps) })
	med := sorted[len(sorted)/2]
	med.Runs = all
	return med, nil
}

// startIperfServer runs `iperf3 -s` bound to addr inside ns until the scope
// ends, and waits for it to listen.
func startIperfServer(s *scope, ns string, addr netip.Addr) {
	cmd := exec.Command("ip", "netns", "exec", ns, "iperf3", "-s", "-B", addr.String(), "-p", iperfPort)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, killed at cleanup: a stray server would hold
	// the namespace's port and, worse, outlive the benchmark.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.Fatalf("iperf3 server in %s: %v", ns, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	// Poll the listening socket with ss rather than connecting: iperf3
	// would take a probe connection for a client and log an error.
	testkit.WaitFor(s, "iperf3 server listening in "+ns, func() bool {
		select {
		case <-done:
			s.Fatalf("iperf3 server in %s exited:\n%s", ns, out.String())
		default:
		}
		o, _ := testkit.Run("ip", "netns", "exec", ns, "ss", "-Hltn", "sport = :"+iperfPort)
		return strings.TrimSpace(o) != ""
	})
}

// iperfJSON is the part of `iperf3 -J` output used here.
type iperfJSON struct {
	End struct {
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// runIperf runs the client in ns against addr with streams parallel
// streams and counts the CPU the machine and the felt daemons (pids) spent
// meanwhile.
func runIperf(ns string, addr netip.Addr, streams int, pids []int) (Throughput, error) {
	r := Throughput{Streams: streams, Seconds: iperfSeconds}
	sys0, err := systemBusy()
	if err != nil {
		return r, err
	}
	felt0, err := procsCPU(pids)
	if err != nil {
		return r, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), (iperfSeconds+30)*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "iperf3", "-c", addr.String(), "-p", iperfPort,
		"-t", fmt.Sprint(iperfSeconds), "-P", fmt.Sprint(streams), "-J").Output()
	sys1, err1 := systemBusy()
	felt1, err2 := procsCPU(pids)
	var j iperfJSON
	if jerr := json.Unmarshal(out, &j); jerr != nil || j.Error != "" || err != nil {
		return r, fmt.Errorf("iperf3 -c %s -P %d in %s: %v %s (json: %v)", addr, streams, ns, err, j.Error, jerr)
	}
	if err1 != nil || err2 != nil {
		return r, fmt.Errorf("cpu after iperf3: %v %v", err1, err2)
	}
	r.Bytes = int64(j.End.SumReceived.Bytes)
	r.Gbps = round3(j.End.SumReceived.BitsPerSecond / 1e9)
	r.Retransmits = j.End.SumSent.Retransmits
	if gb := j.End.SumReceived.Bytes / 1e9; gb > 0 {
		r.SysCPUPerGB = round3((sys1 - sys0) / gb)
		r.FeltCPUPerGB = round3((felt1 - felt0) / gb)
	}
	return r, nil
}
