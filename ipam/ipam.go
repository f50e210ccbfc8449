// Package ipam is felt's remote IPAM driver. Each felt pool (the user's
// --subnet) is split into host subnets; this host leases one through the
// lease registry and hands out container addresses from it. Pool and address
// records are persisted locally, so PoolIDs and allocations survive restarts
// (Docker replays nothing to a remote IPAM).
//
// Files: ipam.go the driver and its dependencies, pools.go RequestPool and
// ReleasePool, addresses.go RequestAddress and ReleaseAddress (allocator.go
// picks them), renew.go this host's leases after RequestPool (renewal,
// release), forget.go earlier felts of this host, poolcheck.go the pools
// refused by their addresses (records: package state).
package ipam

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// Docker option keys the IPAM driver reads.
const (
	optRequestType = "RequestAddressType"
	gatewayType    = "com.docker.network.gateway"
	optMAC         = "com.docker.network.endpoint.macaddress"
	optEndpoint    = "com.docker.network.endpoint.name"
)

// Address spaces felt reports; Docker passes them back in RequestPool and
// felt ignores them (pools are global by construction).
const (
	localAddressSpace  = "FeltLocal"
	GlobalAddressSpace = "FeltGlobal"
)

// Config holds what the IPAM driver depends on.
type Config struct {
	// State holds this host's records: the IPAM's pools and addresses, and
	// the network driver's networks, which tell a felt network's pool.
	State    *state.Store
	Registry *lease.Registry
	// Owner describes this host in the leases it takes for pool.
	Owner func(ctx context.Context, pool netip.Prefix) (lease.Owner, error)
	// HostID is this host's ID, the one Owner puts in leases: releasing a
	// lease needs only it, so a release works when Owner cannot tell the
	// public IP. Empty: taken from Owner.
	HostID string
	// TTL of the leases this host takes; 0 means permanent.
	TTL time.Duration
	// HostNetworks lists the networks of the host's interfaces that
	// overlap pool; a pool overlapping one is refused. Nil: no such check
	// (unit tests). Given the pool, it looks up only the interfaces of
	// overlapping addresses: a host with hundreds of felt bridges would
	// otherwise pay a link lookup per bridge at every RequestPool.
	HostNetworks func(ctx context.Context, pool netip.Prefix) ([]HostNetwork, error)
	// ForgetHost removes what an earlier felt of this host, named by its
	// host ID, left in the kernel (forget.go). Nil: nothing is removed.
	ForgetHost func(ctx context.Context, hostID string) error
	Log        *slog.Logger
}

// Driver is the IPAM side of felt. Calls are serialised: Docker sends few of
// them, and one lock keeps pool reference counts and allocations simple.
type Driver struct {
	cfg     Config
	mu      sync.Mutex
	earlier earlierHosts // taken-over leases' host IDs (forget.go)
}

// New returns an IPAM driver.
func New(cfg Config) *Driver {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Driver{cfg: cfg}
}

// GetCapabilities is static. RequiresMACAddress makes Docker put the MAC in
// endpoint address requests, which is how felt tells them from aux-address
// reservations. Replay is not required: felt persists its allocations.
func (d *Driver) GetCapabilities() *Capabilities {
	return &Capabilities{RequiresMACAddress: true, RequiresRequestReplay: false}
}

// Capabilities adds the field go-plugins-helpers lacks.
type Capabilities struct {
	RequiresMACAddress    bool
	RequiresRequestReplay bool
}

// GetDefaultAddressSpaces names felt's address spaces.
func (d *Driver) GetDefaultAddressSpaces() *api.AddressSpacesResponse {
	return &api.AddressSpacesResponse{LocalDefaultAddressSpace: localAddressSpace, GlobalDefaultAddressSpace: GlobalAddressSpace}
}
