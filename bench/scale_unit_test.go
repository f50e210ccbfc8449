package bench

import (
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
)

func TestTrafficClass(t *testing.T) {
	for target, want := range map[string]string{
		"GET /v1/kv/felt/leases/?recurse=":                                "GET felt/leases/",
		"GET /v1/kv/felt/leases/?recurse=&index=42&wait=5m":               "GET felt/leases/ blocking",
		"GET /v1/kv/felt/leases/10.128.0.0-10/?recurse=":                  "GET felt/leases/10.128.0.0-10/",
		"GET /v1/kv/felt/leases/10.128.0.0-10/10.128.3.0-24":              "GET felt/leases/10.128.0.0-10/*",
		"PUT /v1/kv/felt/leases/10.128.0.0-10/10.128.3.0-24?cas=0":        "PUT felt/leases/10.128.0.0-10/*",
		"GET /v1/kv/felt/networks/?recurse=&index=7":                      "GET felt/networks/ blocking",
		"GET /v1/status/leader":                                           "GET /v1/status/leader",
		"DELETE /v1/kv/felt/leases/10.128.0.0-10/10.128.3.0-24?cas=12345": "DELETE felt/leases/10.128.0.0-10/*",
	} {
		method, u, _ := strings.Cut(target, " ")
		if got := trafficClass(httptest.NewRequest(method, u, nil)); got != want {
			t.Errorf("%s: class %q, want %q", target, got, want)
		}
	}
	got := leaseReads(map[string]traffic{
		"GET felt/leases/ blocking":        {2, 100},
		"GET felt/leases/":                 {1, 50},
		"PUT felt/leases/10.128.0.0-10/*":  {5, 5},
		"GET felt/networks/ blocking":      {1, 7},
		"GET felt/leases/10.128.0.0-10/":   {1, 1},
		"GET felt/leases/10.128.0.0-10/*":  {3, 3},
		"DELETE felt/leases/10.0.0.0-8/*":  {1, 1},
		"GET /v1/kv/felt/leases/ weird no": {1, 1000}, // not a KV class
	})
	if got != (traffic{7, 154}) {
		t.Errorf("leaseReads = %+v, want {7 154}", got)
	}
	if d := trafficSince(map[string]traffic{"a": {1, 10}, "b": {2, 2}}, map[string]traffic{"a": {3, 15}, "b": {2, 2}, "c": {1, 1}}); len(d) != 2 || d["a"] != (traffic{2, 5}) || d["c"] != (traffic{1, 1}) {
		t.Errorf("trafficSince = %v", d)
	}
}

// The bulk loader's records are what lease reads back, at the keys it
// reads them from (checked end to end by checkLoaded in the scale part).
func TestSubnetSeqAndSimLease(t *testing.T) {
	pool := netip.MustParsePrefix("10.128.0.0/22")
	q := newSubnetSeq(pool, 24)
	q.markTaken([]lease.Lease{{Subnet: netip.MustParsePrefix("10.128.1.0/24")}})
	var got []string
	for {
		p, err := q.take()
		if err != nil {
			break
		}
		got = append(got, p.String())
	}
	if want := "10.128.0.0/24 10.128.2.0/24 10.128.3.0/24"; strings.Join(got, " ") != want {
		t.Errorf("subnets %v, want %s", got, want)
	}
	n := lease.Network{Pool: pool, SubnetLen: 24}
	l := simLease(n, 300, netip.MustParsePrefix("10.128.2.0/24"), time.Unix(1e9, 0))
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	var back lease.Lease
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.HostID != "bench-sim-0300" || back.PublicIP != netip.MustParseAddr("198.18.1.45") || back.Subnet != l.Subnet ||
		!strings.Contains(string(back.BackendData), "02:fb:00:00:01:2c") || !back.Expiry.Equal(time.Unix(1e9, 0).Add(time.Hour)) {
		t.Errorf("record %s read back as %+v", b, back)
	}
	if k := leaseKey("felt/", pool, l.Subnet); k != "felt/leases/10.128.0.0-22/10.128.2.0-24" {
		t.Errorf("key %s", k)
	}
}

func TestScaleRows(t *testing.T) {
	st := func(n int) ScaleStage {
		return ScaleStage{Leases: n, BulkRate: 512, AcquireRate: 12.5, AcquireCall: Dist{P50: 80}, RoutedAfterLastBulkS: 1.2,
			RoutedAfterLastAcquireS: 0.4, Propagation: Dist{P50: 120, P99: 300}, WriteToRoute: Dist{P50: 40, P99: 90},
			FeltCPUMSPerChange: []float64{3, 4, 5}, FeltCPUMSPerChangeNet: []float64{2, 2.5, 3}, BytesPerChange: []int64{300 << 10, 2 << 20, 1 << 10},
			LeaseReadsPerChange: []float64{2, 2, 2}, ConsulCPUMSPerChange: 30, RSSKiB: []int{40960}, QuietFeltCPU: []float64{1, 2}, QuietConsulCPU: 0.5}
	}
	r := Results{Scale: Scale{Available: true, RealHosts: 3, Backend: "vxlan", Stages: []ScaleStage{st(1000), st(10000)},
		Watchers: WatcherLoad{Leases: 10000, Points: []WatcherPoint{{Watchers: 10, Changes: 20, ConsulCPUMSPerChange: 120, BytesPerChange: 20 << 20,
			FanOut: Dist{P50: 300}, BytesPerS: 1 << 20, ConsulCPUPercentChanges: 80}}}}}
	got := tableOf(r, map[string]bool{"Scale": true})
	for _, want := range []string{
		"| **control plane at scale**: 3 hosts + simulated leases, vxlan, each host through a counting proxy to Consul | **1,000 leases** | **10,000 leases** | **detail** |  |\n| --- |",
		"| leases joined per second: bulk loader / Acquire | 512 / 12.5 (80 ms) | 512 / 12.5 (80 ms) |",
		"| felt CPU per lease change, max of hosts (minus quiet CPU) | 5.0 ms (3.0 ms) |",
		"| bytes Consul sends per lease change, per host (lease reads) | 2.0 MiB (2.0) |",
		"| felt RSS, max of hosts | 40.0 MiB |",
		"| 10 watchers (20 changes) | 120 ms | 20 MiB | write → every watcher answered p50 300 ms; 1.0 MiB/s; Consul 80% of a core meanwhile |  |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	// A whole run's table has the section only if the part's results do.
	if strings.Contains(table(Results{}), "at scale") {
		t.Error("a results.json without the scale part got its section")
	}
	r.Scale = Scale{RealHosts: 3, Reason: "scale: consul | down\nmore"}
	if got := tableOf(r, map[string]bool{"Scale": true}); !strings.Contains(got, "| control plane at scale | not available: scale: consul / down |") {
		t.Errorf("unavailable scale part:\n%s", got)
	}
}

func TestDistCell(t *testing.T) {
	if got := distCell(Dist{N: 2, P50: 40, P99: 1200}, 1, 180); got != "40 ms / 1200 ms; 1 not routed everywhere within 180 s" {
		t.Errorf("distCell = %q", got)
	}
	if got := distCell(Dist{}, 1, 180); got != "1 not routed everywhere within 180 s" {
		t.Errorf("distCell with nothing routed = %q", got)
	}
}
