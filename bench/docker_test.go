package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/felt-net/felt/testkit"
)

const (
	dockerPlugin = "felt-bench:latest" // not felt:latest: a user's own install is left alone
	dockerLabel  = "felt-bench"
	dockerImage  = "busybox:latest"
	feltNet      = "felt-bench-felt"
	bridgeNet    = "felt-bench-bridge"
	dockerRuns   = 20
)

// DockerRun compares `docker run --rm` on a felt network with the same on a
// Docker user-defined bridge network, through the real engine.
type DockerRun struct {
	Available bool    `json:"available"`
	Reason    string  `json:"reason,omitempty"`
	Engine    string  `json:"engine,omitempty"`
	Runs      int     `json:"runs_each"`
	Felt      Dist    `json:"felt_network"`
	Bridge    Dist    `json:"bridge_network"`
	Ratio     float64 `json:"median_ratio_felt_to_bridge"`
}

// dockerRun installs felt as a managed plugin under its own name with its
// own state directory, makes one felt and one bridge network, and times
// runs on each, alternating so that drift on a busy machine hits both.
func dockerRun(s *scope, r *DockerRun) {
	*r = DockerRun{Runs: dockerRuns}
	var err error
	if r.Engine, err = docker("info", "--format", "{{.ServerVersion}}"); err != nil {
		s.Fatalf("docker engine not reachable: %v", err)
	}
	if _, err := docker("image", "inspect", dockerImage); err != nil {
		s.Fatalf("image %s missing (make image builds it): %v", dockerImage, err)
	}
	removeDockerLeftovers() // of an interrupted run, so they are not taken for another felt
	// felt instances tag their links and rules, so they do not remove each
	// other's; but another felt's containers starting and stopping on the
	// same engine would be measured too. Wait a little for such networks to
	// go, as they are often a demo or a test about to finish; then leave the
	// comparison out rather than report a mixed number.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(2 * time.Second) {
		busy := otherFeltInUse()
		if busy == "" {
			break
		}
		if time.Now().After(deadline) {
			s.Fatalf("another felt is in use on this engine (%s); a second felt plugin in the host namespace "+
				"would be measured too, so the Docker comparison is left out", busy)
		}
	}
	_, gwErr := docker("network", "inspect", "docker_gwbridge")
	s.Cleanup(func() {
		removeDockerLeftovers()
		if gwErr != nil {
			// Docker made it for the felt containers: leave the host as it was.
			// (It refuses while anyone else's container uses it.)
			_, _ = docker("network", "rm", "docker_gwbridge")
		}
	})

	top, err := filepath.Abs("..") // go test runs in bench/
	if err != nil {
		s.Fatalf("module root: %v", err)
	}
	dir := filepath.Join(s.TempDir(), "plugin")
	if out, err := testkit.Run(filepath.Join(top, "scripts/plugin-rootfs.sh"), dir); err != nil {
		s.Fatalf("plugin rootfs: %v\n%s", err, out)
	}
	state := s.TempDir()
	for _, args := range [][]string{
		{"plugin", "create", dockerPlugin, dir},
		{"plugin", "set", dockerPlugin, "state.source=" + state},
		{"plugin", "enable", dockerPlugin},
		{"network", "create", "-d", dockerPlugin, "--ipam-driver", dockerPlugin, "--subnet", "10.99.0.0/16", "--label", dockerLabel, feltNet},
		{"network", "create", "--label", dockerLabel, bridgeNet},
	} {
		if out, err := docker(args...); err != nil {
			s.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// One untimed run each: the first felt container also has Docker make
	// docker_gwbridge, a one-time cost.
	var felt, bridge []time.Duration
	for i := range dockerRuns + 1 {
		for _, net := range []string{feltNet, bridgeNet} {
			d, err := timeRun(net)
			if err != nil {
				s.Fatalf("%v", err)
			}
			if i == 0 {
				continue
			}
			if net == feltNet {
				felt = append(felt, d)
			} else {
				bridge = append(bridge, d)
			}
		}
	}
	r.Felt, r.Bridge = distOf(felt, "ms"), distOf(bridge, "ms")
	r.Ratio = ratio(r.Felt.P50, r.Bridge.P50)
	r.Available = true
	logf("  docker run --rm: felt p50 %.0f ms, bridge p50 %.0f ms (%.2f×)", r.Felt.P50, r.Bridge.P50, r.Ratio)
}

// otherFeltInUse says what shows another felt at work in the host
// namespace: links carrying felt's alias, or Docker networks of a felt
// driver. "" when there is none.
func otherFeltInUse() string {
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), "alias felt:") {
		return "links with a felt: alias"
	}
	out, _ := docker("network", "ls", "--format", "{{.Name}} {{.Driver}}")
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 2 && strings.Contains(f[1], "felt") {
			return "network " + f[0] + " of driver " + f[1]
		}
	}
	return ""
}

// timeRun times one `docker run --rm` of a no-op container on net.
func timeRun(net string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--label", dockerLabel, "--network", net, dockerImage, "true").CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("docker run --network %s: %v\n%s", net, err, out)
	}
	return d, nil
}

// removeDockerLeftovers removes the containers, networks and plugin this
// benchmark makes, also those of an earlier, interrupted run.
func removeDockerLeftovers() {
	if ids, _ := docker("ps", "-aq", "--filter", "label="+dockerLabel); ids != "" {
		_, _ = docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	for _, n := range []string{feltNet, bridgeNet} {
		_, _ = docker("network", "rm", n)
	}
	if _, err := docker("plugin", "inspect", dockerPlugin); err == nil {
		_, _ = docker("plugin", "disable", "-f", dockerPlugin)
		_, _ = docker("plugin", "rm", "-f", dockerPlugin)
	}
}

// docker runs the docker CLI, for at most 2 minutes; combined output,
// trimmed, and an error that says which command failed and how.
func docker(args ...string) (string, error) {
	out, err := testkit.RunWithin(2*time.Minute, append([]string{"docker"}, args...)...)
	if err != nil {
		return out, fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}
