// Package bench measures felt on one machine, with hosts as network
// namespaces (testkit/hosts): data-plane throughput and latency per
// backend against the bare underlay, control-plane convergence at 1,000
// leases, plugin call latency, and `docker run` on a felt network against a
// Docker bridge network. Run it with `make bench`; it writes results.json,
// results.png and the README's Performance table.
//
// The code lives in _test.go files because the hosts harness needs a
// testing.TB, which `go test -bench` provides.
package bench
