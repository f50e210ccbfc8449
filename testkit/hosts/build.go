package hosts

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildFelt builds cmd/felt into out (with the race detector if race) and
// returns out. FELT_GO_OVERLAY passes a go build -overlay file, for testing
// patched sources.
func BuildFelt(out string, race bool) (string, error) {
	top, err := moduleRoot()
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	if ov := os.Getenv("FELT_GO_OVERLAY"); ov != "" {
		args = append(args, "-overlay", ov)
	}
	cmd := exec.Command("go", append(args, "./cmd/felt")...)
	cmd.Dir = top
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building felt: %v\n%s", err, b)
	}
	return out, nil
}

// moduleRoot walks up from the working directory to go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/felt-net/felt") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod of felt not found above the working directory")
		}
		dir = parent
	}
}
