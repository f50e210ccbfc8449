package overlay

import (
	"context"
	"net/netip"

	"github.com/felt-net/felt/lease"
)

// Backend is one way of carrying a network's traffic between hosts. All
// methods are idempotent and level-triggered: they compare the kernel with
// what they are given and fix the difference, so they can be called after a
// restart, a missed event, or someone deleting a device by hand.
type Backend interface {
	// Setup creates (or repairs) the network's own device, if the backend
	// has one: the VTEP for vxlan, the TUN for udp. host-gw has none.
	Setup(ctx context.Context, n Network) error
	// Sync makes the kernel entries towards peers (routes, neighbour and FDB
	// entries) exactly match peers: the leases of n.Pool held by other hosts,
	// none expired. Entries for subnets not in peers are removed, including
	// those left by an earlier run.
	Sync(ctx context.Context, n Network, peers []lease.Lease) error
	// Teardown removes everything Setup and Sync made for n.
	Teardown(ctx context.Context, n Network) error
}

// Host is what backends need to know about the underlay.
type Host interface {
	Addr() (netip.Addr, error) // this host's public IP
	MTU() (int, error)         // the underlay interface's MTU
	Name() (string, error)     // the underlay interface's name
}
