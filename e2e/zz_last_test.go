package e2e

import (
	"strings"
	"testing"

	"github.com/felt-net/felt/testkit"
)

// Runs last: go test runs a package's tests in source order, files in name
// order, and this file sorts after every other e2e file (keep it so, and
// call t.Parallel in no e2e test: parallel tests run after every other).
// `go test -list . ./e2e` shows the order without installing anything.
// Removing networks and the plugin leaves no felt link and no felt
// iptables chain on the host.
func TestZZNoKernelObjectsLeft(t *testing.T) {
	network(t, "felt-last", "--subnet", "10.60.0.0/16")
	container(t, "felt-last-a", "felt-last")
	mustDocker(t, "rm", "-f", "felt-last-a")
	mustDocker(t, "network", "rm", "felt-last")
	mustDocker(t, "plugin", "disable", plugin)
	out, _ := testkit.Run("ip", "-o", "link", "show")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "alias felt:") || strings.Contains(l, ": felt-") || strings.Contains(l, ": fv") {
			t.Errorf("left behind: %s", l)
		}
	}
	for _, chain := range [][]string{{"-S", "FELT"}, {"-t", "mangle", "-S", "FELT-ISOLATION"}, {"-S", "FELT-INPUT"}} {
		if out, err := testkit.Run(append([]string{"iptables"}, chain...)...); err == nil {
			t.Errorf("iptables %s left behind:\n%s", strings.Join(chain, " "), out)
		}
	}
	mustDocker(t, "plugin", "enable", plugin)
}
