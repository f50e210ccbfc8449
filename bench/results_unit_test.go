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
