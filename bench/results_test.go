package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Results is everything one run measured; results.json holds it as is.
type Results struct {
	Machine         Machine      `json:"machine"`
	DataPlane       []Path       `json:"data_plane"`
	DataPlaneReason string       `json:"data_plane_reason,omitempty"` // set when the cluster itself failed
	ControlPlane    ControlPlane `json:"control_plane"`
	Scale           Scale        `json:"control_plane_scale"`
	DockerRun       DockerRun    `json:"docker_run"`
	Names           NameLookups  `json:"name_lookups"`
	Networks        Networks     `json:"networks"`
	DurationS       float64      `json:"duration_s"`
}

// partCount is the number of parts (sub-benchmarks) of a whole run.
const partCount = 6

// partsOf is what the parts in ran measured, by sub-benchmark name, for a
// run of some parts only.
func partsOf(r Results, ran map[string]bool) map[string]any {
	all := map[string]any{"DataPlane": r.DataPlane, "ControlPlane": r.ControlPlane, "Scale": r.Scale, "Docker": r.DockerRun, "Names": r.Names, "Networks": r.Networks}
	if r.DataPlaneReason != "" {
		all["DataPlane"] = map[string]any{"data_plane": r.DataPlane, "data_plane_reason": r.DataPlaneReason}
	}
	out := map[string]any{"machine": r.Machine}
	for name := range ran {
		out[name] = all[name]
	}
	return out
}

// Machine says where the numbers come from.
type Machine struct {
	Date      string `json:"date"`
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu"`
	MemGiB    int    `json:"mem_gib"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	Iperf3    string `json:"iperf3"`
	Felt      string `json:"felt_commit"`
	Note      string `json:"note"`
}

func machine() Machine {
	m := Machine{
		Date:      time.Now().UTC().Format(time.RFC3339),
		NProc:     runtime.NumCPU(),
		GoVersion: runtime.Version(),
		Note: "hosts and containers are network namespaces on one kernel: " +
			"cross-host traffic crosses veths and a bridge, never a physical NIC",
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemGiB = (kb + 1<<19) >> 20
		}
	}
	if out, err := exec.Command("iperf3", "--version").Output(); err == nil {
		m.Iperf3 = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		m.Felt = strings.TrimSpace(string(out))
	}
	return m
}

func writeJSON(path string, r Results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// table renders the results of a whole run as one markdown table: a row
// per data path, then the control-plane, Docker and names rows under their
// own header rows.
func table(r Results) string {
	// A results.json from before the networks part has none: no section.
	// Nor one from before the scale part a scale section.
	return tableOf(r, map[string]bool{"DataPlane": true, "ControlPlane": true, "Docker": true, "Names": true,
		"Networks": r.Networks.Wanted > 0, "Scale": r.Scale.RealHosts > 0})
}

// tableOf is table with the sections of the parts in ran only (a run of
// some parts: -bench 'Felt/Names'); the first section's header row is the
// table's.
func tableOf(r Results, ran map[string]bool) string {
	var b strings.Builder
	first := true
	row := func(cells ...string) { b.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	// header is a section's header row: the table's own, with the
	// separator under it, for the first section.
	header := func(cells ...string) {
		row(cells...)
		if first {
			row("---", "---", "---", "---", "---")
			first = false
		}
	}
	if ran["DataPlane"] {
		header("path", "TCP, 1 stream", "TCP, 4 streams", "TCP request/response p50 / p99", "CPU s per GB (1 stream)")
		if r.DataPlaneReason != "" {
			row("data plane", na(r.DataPlaneReason), "", "", "")
		}
		for _, p := range r.DataPlane {
			if !p.Available {
				row(p.Name, na(p.Reason), "", "", "")
				continue
			}
			cpu := fmt.Sprintf("%.2f", p.Stream1.SysCPUPerGB)
			if userspaceBackend(p.Backend) {
				cpu += fmt.Sprintf(" (felt %.2f)", p.Stream1.FeltCPUPerGB)
			}
			s1 := gbps(p.Stream1)
			if r := p.Stream1RatioToUDP; r != 0 { // wireguard's: the goal is at least 0.8× udp
				var rs []string
				if p.Stream1.RatioToBare != 0 {
					rs = append(rs, fmt.Sprintf("%.2f×", p.Stream1.RatioToBare))
				}
				s1 = fmt.Sprintf("%.2f Gbit/s (%s)", p.Stream1.Gbps, strings.Join(append(rs, fmt.Sprintf("%.2f× udp", r)), ", "))
			}
			row(p.Name, s1, gbps(p.Stream4),
				fmt.Sprintf("%.0f / %.0f µs%s", p.Latency.P50, p.Latency.P99, times(p.LatencyRatioToBare)), cpu)
		}
	}
	cp := r.ControlPlane
	if ran["ControlPlane"] || ran["Docker"] {
		header(fmt.Sprintf("**control plane**: %d hosts + %d simulated leases, %s", cp.RealHosts, cp.SimulatedLeases, cp.Backend), "**p50**", "**p99**", "**detail**", "")
	}
	switch {
	case !ran["ControlPlane"]:
	case !cp.Available:
		row("control plane", na(cp.Reason), "", "", "")
	default:
		row(fmt.Sprintf("new lease → route on all %d hosts (%d leases)", cp.RealHosts, cp.Propagation.N),
			ms(cp.Propagation.P50), ms(cp.Propagation.P99),
			fmt.Sprintf("Acquire call itself p50 %s; %d leases written in %.1f s, all routed on every host after %.1f s",
				ms(cp.Acquire.P50), cp.SimulatedLeases, cp.BulkWriteS, cp.BulkConvergeS), "")
		row(fmt.Sprintf("CreateEndpoint + Join over the socket (%d endpoints)", cp.Endpoints),
			ms(cp.EndpointJoin.P50), ms(cp.EndpointJoin.P99),
			fmt.Sprintf("Leave + DeleteEndpoint p50 %s", ms(cp.EndpointRemove.P50)), "")
		row(fmt.Sprintf("felt RSS with %d leases", cp.SimulatedLeases+cp.RealHosts), "", "",
			fmt.Sprintf("%s max of %d hosts (%s with %d leases)", mib(maxOf(cp.RSSAfterKiB)), cp.RealHosts, mib(maxOf(cp.RSSBeforeKiB)), cp.RealHosts), "")
		if len(cp.QuietCPUPercent) > 0 {
			row(fmt.Sprintf("felt CPU with %d leases, probing every peer", cp.SimulatedLeases+cp.RealHosts), "", "",
				fmt.Sprintf("%.1f%% of a core, max of %d hosts, over %.0f quiet seconds (peer probes every 5 s, at most 50 peers a second; /metrics scraped every second, %d KiB each)",
					slices.Max(cp.QuietCPUPercent), cp.RealHosts, cp.QuietS, cp.ScrapeBytes/1024), "")
		}
	}
	if d := r.DockerRun; ran["Docker"] {
		name := fmt.Sprintf("`docker run --rm`, felt network (%d runs)", d.Runs)
		if !d.Available {
			row(name, na(d.Reason), "", "", "")
		} else {
			row(name, ms(d.Felt.P50), ms(d.Felt.P99),
				fmt.Sprintf("bridge network p50 %s: felt/bridge median %.2f×", ms(d.Bridge.P50), d.Ratio), "")
		}
	}
	if n := r.Names; ran["Names"] {
		header(fmt.Sprintf("**container names**: 2 Docker engines, %d lookups of each name from a container on host 1 (Docker's 127.0.0.11)", n.Lookups),
			"**p50**", "**p99**", "**detail**", "")
		if !n.Available {
			row("name lookups", na(n.Reason), "", "", "")
		} else {
			row("name of a container on host 2 (Docker → felt)", us(n.CrossHost.P50), us(n.CrossHost.P99),
				fmt.Sprintf("%.2f× the local name (p50)", n.CrossHostRatio), "")
			row("name of a container on host 1 (Docker alone)", us(n.Local.P50), us(n.Local.P99), "", "")
			row("external name (Docker → felt → a DNS server on the underlay)", us(n.External.P50), us(n.External.P99),
				fmt.Sprintf("%.2f× the local name (p50)", n.ExternalRatio), "")
		}
	}
	if n := r.Networks; ran["Networks"] {
		header(fmt.Sprintf("**networks on one host**: %d felt networks, one endpoint each, embedded store", n.Wanted),
			"**first**", "**last**", "**detail**", "")
		if !n.Available {
			row("networks", na(n.Reason), "", "", "")
		} else {
			ch, ct, cr := headTail(n.CreateMS)
			dh, dt, dr := headTail(n.DeleteMS)
			made := ""
			if n.Created < n.Wanted {
				made = fmt.Sprintf("; only %d made in the time budget", n.Created)
			}
			row("CreateNetwork (median of the first and last 5)", ms(ch), ms(ct), fmt.Sprintf("last/first %.2f×%s", cr, made), "")
			row("DeleteNetwork (first: all present; last: one)", ms(dh), ms(dt), fmt.Sprintf("first/last %.2f×", 1/max(dr, 1e-9)), "")
			row("felt CPU per network created (first and last tenth)", ms(n.FeltCPUMS[0]), ms(n.FeltCPUMS[1]), "with its endpoint and the overlay reconciles they start", "")
			row("kernel objects left after the deletes", "", "", fmt.Sprintf("%s (at the peak: %s)", n.Left, n.Peak), "")
			switch {
			case n.Alone != nil && n.WithAll != nil:
				row("TCP, 1 stream, container ↔ container on one network (first: no other network; last: all present)",
					fmt.Sprintf("%.2f Gbit/s", n.Alone.Gbps), fmt.Sprintf("%.2f Gbit/s", n.WithAll.Gbps),
					fmt.Sprintf("last/first %.2f× (bridge-nf-call-iptables %s)", n.ThroughputRatio, n.BridgeNFCallIptables), "")
			case n.ThroughputReason != "":
				row("TCP, 1 stream, container ↔ container on one network", na(n.ThroughputReason), "", "", "")
			}
		}
	}
	if ran["Scale"] {
		scaleRows(r.Scale, header, row)
	}
	return b.String()
}

func gbps(t *Throughput) string {
	return fmt.Sprintf("%.2f Gbit/s%s", t.Gbps, times(t.RatioToBare))
}

// times is the " (0.85×)" after a value compared with the bare underlay;
// the bare row itself has no ratio (0).
func times(r float64) string {
	if r == 0 {
		return ""
	}
	return fmt.Sprintf(" (%.2f×)", r)
}

func ms(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

func mib(kb int) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }

func maxOf(v []int) int {
	m := 0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// na is a table cell for something not measured: the reason's first line,
// short enough for a table (results.json has it whole).
func na(reason string) string {
	line, _, _ := strings.Cut(reason, "\n")
	if len(line) > 160 {
		line = line[:160] + "…"
	}
	return "not available: " + strings.ReplaceAll(line, "|", "/")
}

const (
	readmeBegin = "<!-- bench:begin (written by make bench) -->"
	readmeEnd   = "<!-- bench:end -->"
)

// updateReadme replaces what is between the markers in README.md with the
// table, so the README never shows numbers from another run than
// results.json. Without the markers it leaves README.md alone.
func updateReadme(path, tbl string, r Results) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	i, j := bytes.Index(b, []byte(readmeBegin)), bytes.Index(b, []byte(readmeEnd))
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q … %q markers; table not written there", path, readmeBegin, readmeEnd)
	}
	m := r.Machine
	body := fmt.Sprintf("%s\n\nMeasured %s on %d CPUs (%s), %d GiB, kernel %s, %s, %s, felt %s.\n\n%s\n",
		readmeBegin, m.Date[:10], m.NProc, m.CPU, m.MemGiB, m.Kernel, m.GoVersion, m.Iperf3, m.Felt, tbl)
	out := append(append(append([]byte{}, b[:i]...), body...), b[j:]...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
