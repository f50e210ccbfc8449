// Package integration runs felt daemons inside network-namespace "hosts"
// (testkit/hosts), drives them over their sockets with the JSON Docker
// sends, and sends real packets between "containers".
package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// feltBin is the felt binary under test, built once by TestMain.
var feltBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if os.Geteuid() != 0 {
			return testkit.UnavailableMain("integration", "the tests need root")
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

// registryOf reads the leases in the cluster's Consul directly, as a check
// on what its hosts stored.
func registryOf(t testing.TB, c *hosts.Cluster) *lease.Registry {
	t.Helper()
	s, err := consulkv.New(c.ConsulConfig())
	testkit.Must(t, err)
	return lease.NewRegistry(s, "felt/", nil)
}
