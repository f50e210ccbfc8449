package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/state"
)

// RequestAddress allocates from this host's subnet: the asked address if it
// is free and inside the subnet, else the next free one.
func (d *Driver) RequestAddress(ctx context.Context, req *api.RequestAddressRequest) (*api.RequestAddressResponse, error) {
	if req == nil {
		return nil, errors.New("empty RequestAddress request")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.pool(ctx, req.PoolID)
	if err != nil {
		return nil, err
	}
	alloc := newAllocator(d.cfg.State, p)
	isGateway := req.Options[optRequestType] == gatewayType
	_, hasMAC := req.Options[optMAC]
	_, hasName := req.Options[optEndpoint]
	if hasMAC || hasName {
		// The IPAM serves only felt networks: a container's address in a
		// pool that no felt network of this host uses means the user paired
		// felt's IPAM with another network driver.
		_, ok, err := d.cfg.State.NetworkOfPool(ctx, p.Pool)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("felt's IPAM serves only felt networks: pool %s has no felt network on this host; create the network with both -d felt:latest and --ipam-driver felt:latest", p.Pool)
		}
	}
	var addr netip.Addr
	switch {
	case req.Address == "" && isGateway:
		addr = p.Gateway
		if err := alloc.ensure(ctx, addr, state.KindGateway); err != nil {
			return nil, err
		}
	case req.Address == "":
		if addr, err = alloc.next(ctx); err != nil {
			return nil, fmt.Errorf("pool %s: %w", p.Pool, err)
		}
	default:
		if addr, err = netip.ParseAddr(req.Address); err != nil || !addr.Is4() {
			return nil, fmt.Errorf("address %q is not an IPv4 address", req.Address)
		}
		if !p.Subnet.Contains(addr) {
			return nil, fmt.Errorf("address %s is outside this host's subnet %s of pool %s: felt gives each host its own subnet, so --ip (and --gateway, --aux-address) must be inside %s", addr, p.Subnet, p.Pool, p.Subnet)
		}
		kind := state.KindContainer
		switch {
		case isGateway:
			kind = state.KindGateway
		case !hasMAC && !hasName:
			kind = state.KindAux
		}
		if isGateway && addr == p.Gateway {
			err = alloc.ensure(ctx, addr, kind)
		} else {
			err = alloc.reserve(ctx, addr, kind)
		}
		if err != nil {
			return nil, fmt.Errorf("pool %s: %w", p.Pool, err)
		}
	}
	d.cfg.Log.Debug("address allocated", "pool", p.Pool, "addr", addr)
	return &api.RequestAddressResponse{Address: netip.PrefixFrom(addr, p.Subnet.Bits()).String()}, nil
}

// ReleaseAddress frees an address; unknown pools and addresses are fine.
func (d *Driver) ReleaseAddress(ctx context.Context, req *api.ReleaseAddressRequest) error {
	if req == nil {
		return nil
	}
	return d.withHeld(ctx, req.PoolID, func(ctx context.Context, p state.Pool) error {
		return d.releaseAddress(ctx, p, req.Address)
	})
}

// releaseAddress is ReleaseAddress of address in the held pool request p.
func (d *Driver) releaseAddress(ctx context.Context, p state.Pool, address string) error {
	addr, err := netip.ParseAddr(address)
	if err != nil {
		if pfx, perr := netip.ParsePrefix(address); perr == nil {
			addr = pfx.Addr()
		} else {
			return fmt.Errorf("address %q is not an IP address", address)
		}
	}
	if addr == p.Gateway {
		return nil // the bridge holds it for as long as the pool lives
	}
	other, err := newAllocator(d.cfg.State, p).release(ctx, addr)
	if other != "" {
		d.cfg.Log.Warn("address not released: another pool request sharing the subnet holds it", "addr", addr, "pool", p.ID, "holder", other)
	}
	return err
}
