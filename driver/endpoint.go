package driver

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	api "github.com/docker/go-plugins-helpers/network"

	"github.com/felt-net/felt/state"
)

// CreateEndpoint makes the endpoint's veth pair on the network's bridge.
func (d *Driver) CreateEndpoint(ctx context.Context, req *api.CreateEndpointRequest) (*api.CreateEndpointResponse, error) {
	if err := checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID); err != nil {
		return nil, err
	}
	addr, mac, err := parseInterface(req.Interface)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.existingNetwork(ctx, req.NetworkID)
	if err != nil {
		return nil, err
	}
	if err := checkEndpointAddress(n, addr); err != nil {
		return nil, err
	}
	resp := &api.CreateEndpointResponse{}
	ep, found, err := d.cfg.State.Endpoint(ctx, req.EndpointID)
	if err != nil {
		return nil, err
	}
	if found {
		// A repeated call: it must describe the same endpoint.
		if ep.NetworkID != n.ID {
			return nil, fmt.Errorf("endpoint %s already exists on network %s, not on network %s", ep.ID, ep.NetworkID, n.ID)
		}
		if ep.Address != addr {
			return nil, fmt.Errorf("endpoint %s already exists with address %s, not %s", ep.ID, ep.Address, addr)
		}
		if mac != "" && mac != ep.MAC {
			return nil, fmt.Errorf("endpoint %s already exists with MAC address %s, not %s", ep.ID, ep.MAC, mac)
		}
	} else {
		host, peer := vethNames(req.EndpointID)
		ep = state.Endpoint{ID: req.EndpointID, NetworkID: n.ID, Address: addr, MAC: mac, HostVeth: host, PeerVeth: peer}
		if ep.MAC == "" {
			// Docker sent none: return one derived from the address, as
			// Docker's bridge driver does, so it is stable and unique
			// across hosts.
			ep.MAC = macFromIP(addr.Addr()).String()
		}
	}
	if mac == "" {
		resp.Interface = &api.EndpointInterface{MacAddress: ep.MAC}
	}
	if found {
		if owned, err := d.ownsLink(ep.HostVeth, d.aliasEndpoint()+ep.ID); err != nil {
			return nil, err
		} else if owned {
			return resp, nil // it is all there
		}
	}
	if err := d.makeVeth(n, ep); err != nil {
		return nil, err
	}
	if err := d.cfg.State.PutEndpoint(ctx, ep); err != nil {
		_ = d.deleteOwnedLink(ep.HostVeth, d.aliasEndpoint()+ep.ID)
		return nil, err
	}
	d.cfg.Log.Debug("endpoint created", "endpoint", short(ep.ID, 12), "address", addr, "veth", ep.HostVeth)
	return resp, nil
}

// makeVeth creates ep's pair after clearing its names: a leftover of a
// crashed attempt goes, a link of anything else is a refusal.
func (d *Driver) makeVeth(n state.Network, ep state.Endpoint) error {
	if err := d.claimName(ep.HostVeth, d.aliasEndpoint()+ep.ID); err != nil {
		return err
	}
	// The container end of a pair of ours went with its host end: a link of
	// that name now is someone else's.
	if l, err := d.linkByName(ep.PeerVeth); err != nil {
		return err
	} else if l != nil {
		return fmt.Errorf("endpoint %s: a link named %s exists and is not felt's (%s)", ep.ID, ep.PeerVeth, owner(l))
	}
	return d.createVeth(n, ep)
}

func macFromIP(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// DeleteEndpoint removes the veth pair; unknown endpoints are fine (the pair
// of that exact ID goes, if one was left behind).
func (d *Driver) DeleteEndpoint(ctx context.Context, req *api.DeleteEndpointRequest) error {
	if err := checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ep, found, err := d.cfg.State.Endpoint(ctx, req.EndpointID)
	if err != nil {
		return err
	}
	if found && ep.NetworkID != req.NetworkID {
		return fmt.Errorf("endpoint %s belongs to network %s, not to network %s", ep.ID, ep.NetworkID, req.NetworkID)
	}
	if !found {
		host, peer := vethNames(req.EndpointID)
		ep = state.Endpoint{ID: req.EndpointID, HostVeth: host, PeerVeth: peer}
	}
	return d.deleteEndpoint(ctx, ep)
}

// deleteEndpoint removes ep's pair (deleting the host end takes the
// container end with it, wherever it is) and its record.
func (d *Driver) deleteEndpoint(ctx context.Context, ep state.Endpoint) error {
	if err := d.deleteOwnedLink(ep.HostVeth, d.aliasEndpoint()+ep.ID); err != nil {
		return err
	}
	return d.cfg.State.DeleteEndpoint(ctx, ep.ID)
}

// EndpointInfo has nothing to add to what Docker knows.
func (d *Driver) EndpointInfo(ctx context.Context, req *api.InfoRequest) (*api.InfoResponse, error) {
	if err := checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID); err != nil {
		return nil, err
	}
	return &api.InfoResponse{Value: map[string]string{}}, nil
}
