// Package overlay connects a felt network's bridge on this host to the same
// network's subnets on other hosts. A Backend knows one encapsulation (or
// none) and describes itself; each lives in its own package (overlay/vxlan,
// overlay/hostgw, overlay/udp) and is registered in Backends by
// overlay/backends.All.
// The Manager (manager.go; kernel events in kernelevents.go) keeps every
// attached network's kernel state equal to the leases, through the network's
// backend, reconciling only the networks a change concerns (dirty.go). It
// reads leases only through a LeaseSource and a LeaseWatch
// (leasesource.go), which *lease.Registry and *lease.Watch are: it never
// sees the store or its keys.
package overlay

import (
	"net/netip"

	"github.com/felt-net/felt/overlay/internal/kernel"
)

// Network is what a backend needs to know about one felt network here.
type Network struct {
	ID            string       // Docker's network ID on this host
	Pool          netip.Prefix // the overlay's pool, the same on every host
	Subnet        netip.Prefix // this host's lease
	Bridge        string
	Backend       string
	VNI           int
	MTU           int
	DirectRouting bool
	Port          int
}

// RouteProtocol marks every route felt installs ("proto 76"); see
// kernel.RouteProtocol for why.
const RouteProtocol = kernel.RouteProtocol
