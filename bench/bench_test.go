package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit/hosts"
)

// BenchmarkFelt is the whole benchmark, run once (make bench:
// -benchtime 1x): every part is set up, measured and torn down in turn, and
// one table comes out. Nothing here compares against a threshold: numbers
// on a shared 2-core machine are noisy, and noise must not fail the run. A
// part that cannot run is reported as not available, with the reason.
//
// Each part is a sub-benchmark, so one can run alone, e.g. the names part:
//
//	go test -run '^$' -bench 'Felt/Names' -benchtime 1x -count 1 ./bench/
//
// (the control plane at 1,000 and 10,000 leases with simulated watchers is
// 'Felt/Scale'; smaller: -args -scale-leases 2000 -scale-watchers 0,10)
//
// and so is each data-plane path (bare, same-host, host-gw, vxlan,
// vxlan+directrouting, udp, wireguard):
//
//	go test -run '^$' -bench 'Felt/DataPlane/^(bare|udp|wireguard)$' -benchtime 1x -count 1 ./bench/
//
// A run of some parts prints their rows and results but writes no file:
// results.json, results.png and the README's table always hold one whole
// run.
func BenchmarkFelt(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("the benchmark needs root: it makes network namespaces, veths and Docker plugins")
	}
	start := time.Now()
	var r Results
	ran := map[string]bool{} // the parts -bench selected
	somePaths := false       // -bench selected some data-plane paths only
	// The parts run inside one outer scope holding the felt binary, so an
	// interrupt removes that too.
	err := runScope(b, "felt-bench", func(top *scope) {
		// Built once, for the parts that run felt as a process, and only if
		// one of them runs. Without -race: the race detector would slow
		// felt several times over and the numbers would measure it, not felt.
		binDir := top.TempDir()
		feltBin := sync.OnceValues(func() (string, error) { return hosts.BuildFelt(filepath.Join(binDir, "felt"), false) })
		// part runs fn as the sub-benchmark name, if selected. Only the
		// felt build fails a sub-benchmark (the parts' own failures are
		// their scopes'): then the whole run fails, as it cannot measure.
		part := func(name string, fn func(b *testing.B)) {
			ok := b.Run(name, func(b *testing.B) {
				ran[name] = true
				fn(b)
			})
			if !ok {
				top.Fatalf("%s failed", name)
			}
		}
		bin := func(b *testing.B) string {
			bin, err := feltBin()
			if err != nil {
				b.Fatalf("%v", err)
			}
			return bin
		}
		r.Machine = machine()
		part("DataPlane", func(b *testing.B) {
			bin := bin(b)
			all := false
			if err := runScope(b, "data plane", func(s *scope) { r.DataPlane, all = dataPlane(s, b, bin) }); err != nil && len(r.DataPlane) == 0 {
				r.DataPlaneReason = err.Error()
			}
			somePaths = !all && r.DataPlaneReason == ""
		})
		part("ControlPlane", func(b *testing.B) {
			bin := bin(b)
			if err := runScope(b, "control plane", func(s *scope) { controlPlane(s, bin, &r.ControlPlane) }); err != nil {
				r.ControlPlane.Available, r.ControlPlane.Reason = false, err.Error()
			}
		})
		part("Scale", func(b *testing.B) {
			bin := bin(b)
			logf("scale: %d hosts, 1,000 then %d leases, then simulated watchers (%s)", realHosts, *scaleLeases, *scaleWatchers)
			if err := runScope(b, "scale", func(s *scope) { controlPlaneScale(s, bin, &r.Scale) }); err != nil {
				r.Scale.Available, r.Scale.Reason = false, err.Error()
			}
		})
		part("Docker", func(b *testing.B) {
			logf("docker: docker run --rm on a felt network vs a bridge network")
			if err := runScope(b, "docker", func(s *scope) { dockerRun(s, &r.DockerRun) }); err != nil {
				r.DockerRun.Available, r.DockerRun.Reason = false, err.Error()
			}
		})
		part("Networks", func(b *testing.B) {
			bin := bin(b)
			logf("networks: %d felt networks on one host, one endpoint each, embedded store", *networksN)
			if err := runScope(b, "networks", func(s *scope) { manyNetworks(s, bin, &r.Networks) }); err != nil {
				r.Networks.Available, r.Networks.Reason = false, err.Error()
			}
		})
		part("Names", func(b *testing.B) {
			logf("names: lookups of a cross-host, a local and an external name from a container, two Docker engines")
			if err := runScope(b, "names", func(s *scope) { nameLookups(s, &r.Names) }); err != nil {
				r.Names.Available, r.Names.Reason = false, err.Error()
			}
		})
	})
	if interrupted.Load() {
		select {} // the interrupt handler is cleaning up and exits the process
	}
	if err != nil {
		b.Fatal(err)
	}
	r.DurationS = round3(time.Since(start).Seconds())

	tbl := tableOf(r, ran)
	fmt.Println()
	fmt.Print(tbl)
	fmt.Println()
	if len(ran) < partCount || somePaths {
		out, err := json.MarshalIndent(partsOf(r, ran), "", "  ")
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("%s\n", out)
		logf("not every part ran (-bench): results.json, results.png and README.md left as they are")
		return
	}
	// go test runs the benchmark in its package directory, bench/.
	if err := writeJSON("results.json", r); err != nil {
		b.Fatal(err)
	}
	if err := writeChart("results.png", r); err != nil {
		b.Fatal(err)
	}
	if err := updateReadme(filepath.Join("..", "README.md"), tbl, r); err != nil {
		logf("%v", err) // the table is printed and in results.json anyway
	}
	logf("wrote bench/results.json, bench/results.png and README.md's table in %.0f s", r.DurationS)
}
