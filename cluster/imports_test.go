package cluster

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/felt-net/felt/testkit"
)

// Only package cluster talks to Docker: no other felt package imports the
// Docker API client, and the packages behind the plugin's handlers (driver,
// ipam, lease, overlay, and what they stand on) do not even depend on it,
// so no handler can call Docker except through an Engine, which refuses a
// handler's context. The deprecated github.com/docker/docker is not used
// at all.
func TestOnlyClusterImportsTheDockerClient(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		testkit.Unavailable(t, "no go command: %v", err)
	}
	top, err := testkit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goCmd, "list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", "./...")
	cmd.Dir = top
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const (
		felt   = "github.com/felt-net/felt/"
		self   = felt + "cluster"
		client = "github.com/moby/moby/client"
	)
	isDocker := func(p string) bool {
		return p == client || strings.HasPrefix(p, client+"/") || strings.HasPrefix(p, "github.com/moby/moby/api/")
	}
	// Packages whose code runs inside plugin handlers, or under them.
	noDocker := []string{"driver", "ipam", "lease", "overlay", "kv", "state", "firewall", "storeformat", "internal"}
	seen := 0
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		pkg, rest, _ := strings.Cut(line, "|")
		imports, deps, _ := strings.Cut(rest, "|")
		seen++
		for _, imp := range strings.Fields(imports) {
			if isDocker(imp) && pkg != self {
				t.Errorf("%s imports %s: only %s may", pkg, imp, self)
			}
		}
		rel := strings.TrimPrefix(pkg, felt)
		for _, dep := range strings.Fields(deps) {
			if strings.HasPrefix(dep, "github.com/docker/docker/") || dep == "github.com/docker/docker" {
				t.Errorf("%s depends on %s: use github.com/moby/moby/client", pkg, dep)
			}
			for _, p := range noDocker {
				if (rel == p || strings.HasPrefix(rel, p+"/")) && (isDocker(dep) || dep == self) {
					t.Errorf("%s depends on %s: its code runs in plugin handlers, which must not reach Docker", pkg, dep)
				}
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list saw %d packages: %s", seen, out)
	}
}
