package driver

import (
	"context"
	"fmt"
	"net/netip"

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
	route, err := d.dnsRoute(ctx, &ep, req.SandboxKey)
	if err != nil {
		return nil, err
	}
	if route {
		resp.StaticRoutes = append(resp.StaticRoutes, &api.StaticRoute{Destination: netip.PrefixFrom(d.cfg.DNS, 32).String(), RouteType: 0, NextHop: n.Gateway.String()})
	}
	return resp, nil
}

// dnsRoute records ep's sandbox and decides whether ep carries the route
// to felt's DNS address (package names): queries then reach felt through
// the felt bridge with the container's felt address as source, also on
// --internal networks, which have no default route. Only the first felt
// endpoint of a sandbox gets it: Docker fails the start of a container
// whose second network returns the same route ("file exists"). A repeated
// Join of the holder gets it again.
func (d *Driver) dnsRoute(ctx context.Context, ep *state.Endpoint, sandbox string) (bool, error) {
	if !d.cfg.DNS.IsValid() || sandbox == "" {
		return false, nil
	}
	if !ep.DNSRoute {
		eps, err := d.cfg.State.Endpoints(ctx)
		if err != nil {
			return false, err
		}
		holder := false
		for _, o := range eps {
			holder = holder || o.ID != ep.ID && o.SandboxKey == sandbox && o.DNSRoute
		}
		ep.DNSRoute = !holder
	}
	if ep.SandboxKey != sandbox || ep.DNSRoute {
		ep.SandboxKey = sandbox
		if err := d.cfg.State.PutEndpoint(ctx, *ep); err != nil {
			return false, err
		}
	}
	return ep.DNSRoute, nil
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

// Leave forgets the endpoint's sandbox, and with it the DNS route, so
// that another felt network connected later gets the route; the veth goes
// with DeleteEndpoint.
func (d *Driver) Leave(ctx context.Context, req *api.LeaveRequest) error {
	if err := checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ep, found, err := d.cfg.State.Endpoint(ctx, req.EndpointID)
	if err != nil || !found || (ep.SandboxKey == "" && !ep.DNSRoute) {
		return err
	}
	ep.SandboxKey, ep.DNSRoute = "", false
	if err := d.cfg.State.PutEndpoint(ctx, ep); err != nil {
		// Not worth failing a container's stop: the record is rewritten
		// at its next Join, and the worst meanwhile is a later network
		// of the same sandbox without the route.
		d.cfg.Log.Warn("Leave: recording the endpoint's sandbox as left", "endpoint", ep.ID, "err", err)
	}
	return nil
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
