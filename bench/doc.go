// Package bench measures felt on one machine, with hosts as network
// namespaces (testkit/hosts): data-plane throughput and latency per
// backend against the bare underlay, control-plane convergence at 1,000
// leases, the control plane at 1,000 and 10,000 leases with the bytes
// Consul sends per lease change and its load against simulated watchers
// (the Scale part), plugin call latency, `docker run` on a felt network against a
// Docker bridge network, and the latency of container name lookups across
// two Docker engines (cross-host, local, external). Run it with `make
// bench`; it writes results.json, results.png and the README's Performance
// table. Each part is a sub-benchmark of BenchmarkFelt and can run alone
// (-bench 'Felt/Names'), and so can each data-plane path
// (-bench 'Felt/DataPlane/^(bare|udp|wireguard)$'); such a run prints its
// results and writes no file.
//
// The code lives in _test.go files because the hosts harness needs a
// testing.TB, which `go test -bench` provides.
package bench
