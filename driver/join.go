package driver

import (
	"context"
	"fmt"

	api "github.com/docker/go-plugins-helpers/network"

	"github.com/felt-net/felt/state"
)

// Join hands Docker the container end of the veth. felt returns no default
// gateway: Docker then attaches the container to docker_gwbridge for NAT and
// -p (or not at all for --internal), while a route sends the whole pool,
// including other hosts' subnets, through the felt bridge.
//
// Join is idempotent: while the host end of the pair exists the pair is
// whole (the kernel deletes both ends together), its container end either
// still in this namespace or already moved into a container, and a repeated
// Join answers the same without touching it; recreating it would cut the
// container off. Only a pair that vanished is made again.
func (d *Driver) Join(ctx context.Context, req *api.JoinRequest) (*api.JoinResponse, error) {
	if err := checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ep, err := d.joinable(ctx, req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	owned, err := d.ownsLink(ep.HostVeth, d.aliasEndpoint()+ep.ID)
	if err != nil {
		return nil, err
	}
	if !owned {
		// The pair vanished (someone deleted it): make it again rather
		// than fail the container start.
		if err := d.makeVeth(n, ep); err != nil {
			return nil, err
		}
	}
	resp := &api.JoinResponse{InterfaceName: api.InterfaceName{SrcName: ep.PeerVeth, DstPrefix: "eth"}}
	if n.Pool != n.Subnet {
		resp.StaticRoutes = []*api.StaticRoute{{Destination: n.Pool.String(), RouteType: 0, NextHop: n.Gateway.String()}}
	}
	return resp, nil
}

// joinable reads the records of network netID and of its endpoint epID,
// both of which must exist.
func (d *Driver) joinable(ctx context.Context, netID, epID string) (state.Network, state.Endpoint, error) {
	n, err := d.existingNetwork(ctx, netID)
	if err != nil {
		return n, state.Endpoint{}, err
	}
	ep, found, err := d.cfg.State.Endpoint(ctx, epID)
	switch {
	case err != nil:
	case !found:
		err = fmt.Errorf("endpoint %s does not exist on this host", epID)
	case ep.NetworkID != n.ID:
		err = fmt.Errorf("endpoint %s belongs to network %s, not to network %s", ep.ID, ep.NetworkID, n.ID)
	}
	return n, ep, err
}

// Leave has nothing to undo: the veth goes with DeleteEndpoint.
func (d *Driver) Leave(ctx context.Context, req *api.LeaveRequest) error {
	return checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID)
}

// ProgramExternalConnectivity has nothing to do: felt returns no gateway,
// so Docker handles NAT and -p on docker_gwbridge.
func (d *Driver) ProgramExternalConnectivity(ctx context.Context, req *api.ProgramExternalConnectivityRequest) error {
	return checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID)
}

// RevokeExternalConnectivity has nothing to undo, as above.
func (d *Driver) RevokeExternalConnectivity(ctx context.Context, req *api.RevokeExternalConnectivityRequest) error {
	return checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID)
}
