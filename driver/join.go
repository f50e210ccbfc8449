package driver

import (
	"context"
	"fmt"

	api "github.com/docker/go-plugins-helpers/network"
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
	n, err := d.existingNetwork(ctx, req.NetworkID)
	if err != nil {
		return nil, err
	}
	ep, found, err := d.cfg.State.Endpoint(ctx, req.EndpointID)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("endpoint %s does not exist on this host", req.EndpointID)
	}
	if ep.NetworkID != n.ID {
		return nil, fmt.Errorf("endpoint %s belongs to network %s, not to network %s", ep.ID, ep.NetworkID, n.ID)
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
