package driver

import (
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/backends"
)

// testBackends are felt's backends as plugin.Build registers them; the
// driver's tests use only their descriptions (options, overhead, the
// default), never their kernel methods.
func testBackends() *overlay.Backends { return backends.All(overlay.BackendConfig{}) }
