package hosts

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/felt-net/felt/testkit"
)

// BuildFelt builds cmd/felt into out (with the race detector if race) and
// returns out. FELT_GO_OVERLAY passes a go build -overlay file, for testing
// patched sources.
func BuildFelt(out string, race bool) (string, error) {
	top, err := testkit.ModuleRoot()
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
