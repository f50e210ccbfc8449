package cluster

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
)

// systemDocker is the host's own engine (Docker 20.10, API 1.41, on the
// test machine).
const systemDocker = "unix:///var/run/docker.sock"

// Against the system's Docker, read-only and cheap: the client negotiates
// down to the daemon's version, the driver filter is accepted, and the
// not-found answers map as Remove and Inspect promise. The :latest name
// sends the filter with two values (name and name:latest). Run it under
// `flock /tmp/felt-docker.lock`, as everything touching that engine.
func TestEngineSystemDocker(t *testing.T) {
	if _, err := os.Stat("/var/run/docker.sock"); err != nil {
		testkit.Unavailable(t, "no system Docker: %v", err)
	}
	e := newEngine(EngineConfig{Host: systemDocker, DriverName: "felt-no-such-driver:latest"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nets, err := e.Networks(ctx)
	if err != nil {
		if connectionLost(ctx, err) {
			testkit.Unavailable(t, "system Docker not reachable: %v", err)
		}
		t.Fatal(err)
	}
	if len(nets) != 0 {
		t.Errorf("networks of driver felt-no-such-driver:latest: %+v", nets)
	}
	t.Logf("system Docker: API %s", e.cur.cli.ClientVersion())
	const missing = "felt-engine-test-no-such-network"
	if _, err := e.Inspect(ctx, missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Inspect(%s) = %v, want ErrNotFound", missing, err)
	}
	if err := e.Remove(ctx, missing); err != nil {
		t.Errorf("Remove(%s) = %v, want nil (already gone)", missing, err)
	}
}
