package overlay

import (
	"context"
	"errors"

	"github.com/felt-net/felt/lease"
)

// errUDPNotImplemented is what the udp backend answers until it exists.
var errUDPNotImplemented = errors.New("backend udp is not implemented yet: use backend=vxlan or backend=host-gw")

// udp is a stand-in for the "udp" backend (a TUN device and a userspace
// forwarder, flannel's first design), which another engineer is building.
// It is registered so that a network asking for it fails with a clear
// message at Setup instead of "backend not available".
type udp struct{}

func (udp) Setup(context.Context, Network) error               { return errUDPNotImplemented }
func (udp) Sync(context.Context, Network, []lease.Lease) error { return errUDPNotImplemented }

// Teardown has nothing to remove: Setup never created anything.
func (udp) Teardown(context.Context, Network) error { return nil }
