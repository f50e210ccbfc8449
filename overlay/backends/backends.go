// Package backends registers felt's overlay backends: the one place a new
// backend (its own package under overlay/) is added.
package backends

import (
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/hostgw"
	"github.com/felt-net/felt/overlay/udp"
	"github.com/felt-net/felt/overlay/vxlan"
	"github.com/felt-net/felt/overlay/wireguard"
)

// All returns felt's backends for the host cfg describes. The first is the
// default, the backend of a network created without -o backend.
func All(cfg overlay.BackendConfig) *overlay.Backends {
	return overlay.NewBackends(vxlan.New(cfg), hostgw.New(cfg), udp.New(cfg), wireguard.New(cfg))
}
