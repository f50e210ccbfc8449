// Package driver is felt's remote network driver: a Linux bridge per felt
// network holding this host's gateway, a veth pair per endpoint, firewall
// rules that isolate networks, and the overlay that links the bridge to the
// network's subnets on other hosts. Records of networks and endpoints are
// persisted (package state), since Docker replays neither to a remote
// driver.
//
// Files: driver.go the driver and its dependencies, network.go
// CreateNetwork and DeleteNetwork, endpoint.go CreateEndpoint and
// DeleteEndpoint, join.go Join and the calls with nothing to do, links.go
// the kernel links, recover.go start-up and shutdown, forget.go an earlier
// felt's links, options.go the -o options, request.go and ids.go checks of
// Docker's requests.
package driver

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"

	api "github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/state"
)

// Overlay links a network's bridge to its subnets on other hosts.
type Overlay interface {
	// Attach starts (idempotently) connecting n to its peers.
	Attach(ctx context.Context, n overlay.Network) error
	// Detach stops and removes n's overlay state on this host.
	Detach(ctx context.Context, n overlay.Network) error
	// Check reports, before creation, why n cannot work with its peers.
	Check(ctx context.Context, n overlay.Network) error
}

// Cluster is told of this host's network creations and removals, to make
// them cluster-wide (package cluster). Neither call may call Docker or wait
// for anything but local state: dockerd holds its locks while it calls the
// driver.
type Cluster interface {
	// Created: network id was created on this host.
	Created(id string)
	// Deleted: the user removes network id (of pool) on this host; called
	// before anything is removed, and an error fails the removal.
	Deleted(ctx context.Context, id string, pool netip.Prefix) error
}

// Config holds the driver's dependencies.
type Config struct {
	// State holds this host's records: the driver's networks and
	// endpoints, and the IPAM's pools, which map a subnet to its pool.
	State    *state.Store
	Registry *lease.Registry
	Netlink  *netlink.Handle
	Firewall *firewall.Firewall
	Overlay  Overlay
	// Backends describe the overlay backends: the options each takes, its
	// overhead, the default one (overlay.Backends).
	Backends *overlay.Backends
	// Instance names this felt (its host ID) in the kernel objects it marks.
	Instance string
	// UnderlayMTU is the MTU of the interface carrying traffic to other hosts.
	UnderlayMTU func() (int, error)
	// Cluster, if set, makes networks cluster-wide; nil: cluster networks
	// are off (embedded store, or no Docker API access).
	Cluster Cluster
	Log     *slog.Logger
	// DNS is felt's DNS address (FELT_DNS), routed through the felt
	// gateway in each container (join.go); invalid: off.
	DNS netip.Addr
}

// Driver serves the NetworkDriver calls.
type Driver struct {
	cfg Config
	nl  *netlink.Handle
	mu  sync.Mutex
	// beforeLinkDel, set only by tests, runs in deleteLink between a
	// link's lookup and its delete: where someone else deletes it first.
	beforeLinkDel func(netlink.Link)
}

// New returns a network driver.
func New(cfg Config) *Driver {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Driver{cfg: cfg, nl: cfg.Netlink}
}

// Capabilities answers GetCapabilities, statically. Scope local: each host's
// Docker keeps its own network object; ConnectivityScope global: containers
// reach other hosts.
func Capabilities() *api.CapabilitiesResponse {
	return &api.CapabilitiesResponse{Scope: api.LocalScope, ConnectivityScope: api.GlobalScope}
}

// overlayNetwork is what the overlay backends need of n.
func overlayNetwork(n state.Network) overlay.Network {
	return overlay.Network{ID: n.ID, Pool: n.Pool, Subnet: n.Subnet, Bridge: n.Bridge, Backend: n.Backend,
		VNI: n.VNI, MTU: n.MTU, DirectRouting: n.DirectRouting, Port: n.Port}
}
