// Package integration runs felt daemons inside network-namespace "hosts"
// (testkit/hosts), drives them over their sockets with the JSON Docker
// sends, and sends real packets between "containers".
package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/felt-net/felt/testkit/hosts"
)

// feltBin is the felt binary under test, built once by TestMain.
var feltBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if os.Geteuid() != 0 {
			if os.Getenv("CI") == "true" {
				fmt.Fprintln(os.Stderr, "integration tests need root (CI=true: not skipping)")
				return 1
			}
			fmt.Fprintln(os.Stderr, "integration tests need root: skipped")
			return 0
		}
		dir, err := os.MkdirTemp("", "felt-it-bin")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		if feltBin, err = hosts.BuildFelt(filepath.Join(dir, "felt"), true); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}
