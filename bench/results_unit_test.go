package bench

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestTableMatchesReadme: the README's table is what the generator makes
// of results.json, so a change to the generator shows here before a run.
func TestTableMatchesReadme(t *testing.T) {
	b, err := os.ReadFile("results.json")
	if err != nil {
		t.Fatal(err)
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, body, ok := strings.Cut(string(readme), readmeBegin)
	body, _, ok2 := strings.Cut(body, readmeEnd)
	if !ok || !ok2 {
		t.Fatalf("README.md: no %q … %q markers", readmeBegin, readmeEnd)
	}
	var rows []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "|") {
			rows = append(rows, l)
		}
	}
	got := strings.Split(strings.TrimSuffix(table(r), "\n"), "\n")
	// A results.json from before the names part has no name_lookups: the
	// README's table is then the generated one without those rows.
	if r.Names.Lookups == 0 {
		got = got[:len(got)-2]
	}
	if strings.Join(got, "\n") != strings.Join(rows, "\n") {
		t.Errorf("table(results.json):\n%s\nREADME.md's table:\n%s", strings.Join(got, "\n"), strings.Join(rows, "\n"))
	}
}

func TestTableNames(t *testing.T) {
	r := Results{Names: NameLookups{Available: true, Lookups: 500,
		CrossHost: Dist{Unit: "µs", P50: 612.4, P99: 1830}, Local: Dist{Unit: "µs", P50: 201, P99: 390},
		External: Dist{Unit: "µs", P50: 700, P99: 12400}, CrossHostRatio: 3.047, ExternalRatio: 3.483}}
	want := strings.Join([]string{
		"| **container names**: 2 Docker engines, 500 lookups of each name from a container on host 1 (Docker's 127.0.0.11) | **p50** | **p99** | **detail** |  |",
		"| --- | --- | --- | --- | --- |",
		"| name of a container on host 2 (Docker → felt) | 612 µs | 1.8 ms | 3.05× the local name (p50) |  |",
		"| name of a container on host 1 (Docker alone) | 201 µs | 390 µs |  |  |",
		"| external name (Docker → felt → a DNS server on the underlay) | 700 µs | 12 ms | 3.48× the local name (p50) |  |",
	}, "\n") + "\n"
	// Only the names part ran (-bench 'Felt/Names'): its header heads the table.
	if got := tableOf(r, map[string]bool{"Names": true}); got != want {
		t.Errorf("names alone:\n%s\nwant:\n%s", got, want)
	}
	// A whole run: the names section last, under its own header row.
	full := table(r)
	if !strings.HasSuffix(full, strings.Replace(want, "| --- | --- | --- | --- | --- |\n", "", 1)) {
		t.Errorf("whole run: names section not last:\n%s", full)
	}
	r.Names = NameLookups{Lookups: 500, Reason: "names: docker engine | not reachable\nmore"}
	if got := tableOf(r, map[string]bool{"Names": true}); !strings.Contains(got, "| name lookups | not available: names: docker engine / not reachable |") {
		t.Errorf("unavailable names part:\n%s", got)
	}
}

// relate sets ratios against the bare underlay when the baseline ran, and
// wireguard's single stream against udp's; the table shows felt's own CPU
// share for both user-space backends and wireguard's ratio to udp.
func TestRelateAndWireGuardRow(t *testing.T) {
	tp := func(g, cpu, felt float64) *Throughput {
		return &Throughput{Gbps: g, SysCPUPerGB: cpu, FeltCPUPerGB: felt}
	}
	lat := func(p50 float64) *Dist { return &Dist{Unit: "µs", P50: p50, P99: 2 * p50} }
	paths := []Path{
		{Name: bareName, Available: true, Stream1: tp(20, 0.5, 0), Stream4: tp(40, 0.5, 0), Latency: lat(10)},
		{Name: "cross-host udp", Backend: "udp", Available: true, Stream1: tp(10, 1.4, 1.1), Stream4: tp(10, 1.4, 1.1), Latency: lat(150)},
		{Name: "cross-host wireguard", Backend: "wireguard", Available: true, Stream1: tp(8.5, 1.9, 1.5), Stream4: tp(9, 1.9, 1.5), Latency: lat(160)},
	}
	relate(paths)
	wg := paths[2]
	if wg.Stream1.RatioToBare != 0.425 || wg.Stream4.RatioToBare != 0.225 || wg.LatencyRatioToBare != 16 || wg.Stream1RatioToUDP != 0.85 {
		t.Fatalf("wireguard ratios: 1 stream %v, 4 streams %v, latency %v, to udp %v", wg.Stream1.RatioToBare, wg.Stream4.RatioToBare, wg.LatencyRatioToBare, wg.Stream1RatioToUDP)
	}
	if paths[1].Stream1RatioToUDP != 0 || paths[0].Stream1.RatioToBare != 0 {
		t.Fatalf("udp's ratio to itself %v, bare's to itself %v: want none", paths[1].Stream1RatioToUDP, paths[0].Stream1.RatioToBare)
	}
	got := tableOf(Results{DataPlane: paths}, map[string]bool{"DataPlane": true})
	for _, want := range []string{
		"| cross-host udp | 10.00 Gbit/s (0.50×) | 10.00 Gbit/s (0.25×) | 150 / 300 µs (15.00×) | 1.40 (felt 1.10) |",
		"| cross-host wireguard | 8.50 Gbit/s (0.42×, 0.85× udp) | 9.00 Gbit/s (0.23×) | 160 / 320 µs (16.00×) | 1.90 (felt 1.50) |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table:\n%s\nwant the row\n%s", got, want)
		}
	}

	// Only udp and wireguard ran (-bench 'Felt/DataPlane/^(udp|wireguard)$'):
	// no ratios to a baseline that is not there, the ratio to udp still.
	some := []Path{
		{Name: "cross-host udp", Backend: "udp", Available: true, Stream1: tp(10, 1.4, 1.1), Stream4: tp(10, 1.4, 1.1), Latency: lat(150)},
		{Name: "cross-host wireguard", Backend: "wireguard", Available: true, Stream1: tp(6, 1.9, 1.5), Stream4: tp(9, 1.9, 1.5), Latency: lat(160)},
	}
	relate(some)
	if some[1].Stream1.RatioToBare != 0 || some[1].Stream1RatioToUDP != 0.6 {
		t.Fatalf("without the baseline: ratio to bare %v, to udp %v", some[1].Stream1.RatioToBare, some[1].Stream1RatioToUDP)
	}
	if got := tableOf(Results{DataPlane: some}, map[string]bool{"DataPlane": true}); !strings.Contains(got, "| cross-host wireguard | 6.00 Gbit/s (0.60× udp) | 9.00 Gbit/s |") {
		t.Errorf("table without the baseline:\n%s", got)
	}
}

func TestTableNetworks(t *testing.T) {
	r := Results{Networks: Networks{Available: true, Wanted: 500, Created: 500,
		CreateMS: []float64{20, 10, 12, 11, 13, 50, 21, 22, 19, 20}, DeleteMS: []float64{90, 100, 110, 95, 105, 50, 40, 60, 55, 45},
		FeltCPUMS: [2]float64{8, 30}, Left: KernelObjects{Links: 1}}}
	got := tableOf(r, map[string]bool{"Networks": true})
	for _, want := range []string{
		"| **networks on one host**: 500 felt networks, one endpoint each, embedded store | **first** | **last** |",
		"| CreateNetwork (median of the first and last 5) | 12 ms | 21 ms | last/first 1.75× |  |",
		"| DeleteNetwork (first: all present; last: one) | 100 ms | 50 ms | first/last 2.00× |  |",
		"| kernel objects left after the deletes |  |  | 1 links, 0 routes, 0 ip rules, 0 iptables lines",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in:\n%s", want, got)
		}
	}
	r.Networks.Created = 120
	if got := tableOf(r, map[string]bool{"Networks": true}); !strings.Contains(got, "only 120 made in the time budget") {
		t.Errorf("a short run does not say so:\n%s", got)
	}
	// A results.json from before the part: no section in the whole table.
	if got := table(Results{}); strings.Contains(got, "networks on one host") {
		t.Errorf("networks section without the part's results:\n%s", got)
	}
}
