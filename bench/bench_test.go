package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit/hosts"
)

// BenchmarkFelt is the whole benchmark, run once (make bench:
// -benchtime 1x): every part is set up, measured and torn down in turn, and
// one table comes out. Nothing here compares against a threshold: numbers
// on a shared 2-core machine are noisy, and noise must not fail the run. A
// part that cannot run is reported as not available, with the reason.
func BenchmarkFelt(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("the benchmark needs root: it makes network namespaces, veths and Docker plugins")
	}
	start := time.Now()
	var r Results
	// The parts run inside one outer scope holding the felt binary, so an
	// interrupt removes that too.
	err := runScope(b, "felt-bench", func(top *scope) {
		// Without -race: the race detector would slow felt several times
		// over and the numbers would measure it, not felt.
		bin, err := hosts.BuildFelt(filepath.Join(top.TempDir(), "felt"), false)
		if err != nil {
			top.Fatalf("%v", err)
		}
		r.Machine = machine()
		if err := runScope(b, "data plane", func(s *scope) { r.DataPlane = dataPlane(s, bin) }); err != nil && len(r.DataPlane) == 0 {
			r.DataPlaneReason = err.Error()
		}
		if err := runScope(b, "control plane", func(s *scope) { controlPlane(s, bin, &r.ControlPlane) }); err != nil {
			r.ControlPlane.Available, r.ControlPlane.Reason = false, err.Error()
		}
		logf("docker: docker run --rm on a felt network vs a bridge network")
		if err := runScope(b, "docker", func(s *scope) { dockerRun(s, &r.DockerRun) }); err != nil {
			r.DockerRun.Available, r.DockerRun.Reason = false, err.Error()
		}
	})
	if interrupted.Load() {
		select {} // the interrupt handler is cleaning up and exits the process
	}
	if err != nil {
		b.Fatal(err)
	}
	r.DurationS = round3(time.Since(start).Seconds())

	// go test runs the benchmark in its package directory, bench/.
	tbl := table(r)
	fmt.Println()
	fmt.Print(tbl)
	fmt.Println()
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
