package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// Runs last: go test runs a package's files in name order, and this file
// sorts after every other e2e file (keep it so). Removing networks and the plugin
// leaves no felt link and no felt iptables chain on the host.
func TestZZNoKernelObjectsLeft(t *testing.T) {
	network(t, "felt-last", "--subnet", "10.60.0.0/16")
	container(t, "felt-last-a", "felt-last")
	mustDocker(t, "rm", "-f", "felt-last-a")
	mustDocker(t, "network", "rm", "felt-last")
	mustDocker(t, "plugin", "disable", plugin)
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "alias felt:") || strings.Contains(l, ": felt-") || strings.Contains(l, ": fv") {
			t.Errorf("left behind: %s", l)
		}
	}
	for _, chain := range [][]string{{"-S", "FELT"}, {"-t", "mangle", "-S", "FELT-ISOLATION"}} {
		if out, err := exec.Command("iptables", chain...).CombinedOutput(); err == nil {
			t.Errorf("iptables %s left behind:\n%s", strings.Join(chain, " "), out)
		}
	}
	mustDocker(t, "plugin", "enable", plugin)
}
