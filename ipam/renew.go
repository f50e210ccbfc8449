package ipam

import (
	"context"
	"errors"
	"net/netip"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// This host's leases once RequestPool took them: renewed, checked for, and
// given back.

// Renew extends the lease of every pool this host holds, re-acquiring one
// that vanished (it expired while the host was down or cut off). It returns
// the first error, after trying all.
func (d *Driver) Renew(ctx context.Context) error {
	d.mu.Lock()
	pools, err := d.cfg.State.Pools(ctx)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	var first error
	for _, p := range pools {
		if err := d.renewHeld(ctx, p); err != nil {
			d.cfg.Log.Warn("lease renewal failed", "subnet", p.Subnet, "err", err)
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// renewHeld renews the lease of pool request p, then makes sure this host
// still holds that subnet: a ReleasePool during the renewal (docker network
// rm) released the lease, and the renewal, which read the pool before,
// leased the subnet again (and remade the network record) for a pool
// nothing here holds any more; that lease is released again. The lock is
// not held during the renewal itself: with the store unreachable it waits
// up to the store's timeout, and address requests, which need only the
// local state, must not wait with it.
func (d *Driver) renewHeld(ctx context.Context, p state.Pool) error {
	err := d.renewPool(ctx, p)
	d.mu.Lock()
	defer d.mu.Unlock()
	pools, lerr := d.cfg.State.Pools(ctx)
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	for _, o := range pools {
		if o.Pool == p.Pool && o.Subnet == p.Subnet {
			return err // still held
		}
	}
	d.releaseLease(ctx, p, "could not release the lease of a pool released during its renewal; it will expire")
	return nil
}

func (d *Driver) renewPool(ctx context.Context, p state.Pool) error {
	owner, err := d.cfg.Owner(ctx, p.Pool)
	if err != nil {
		return err
	}
	n, err := d.cfg.Registry.ReservePool(ctx, p.Pool, p.Subnet.Bits())
	if err != nil {
		return err
	}
	_, err = d.cfg.Registry.Renew(ctx, lease.RenewRequest{Network: n, Subnet: p.Subnet, Owner: owner, TTL: d.cfg.TTL,
		OnTakeover: d.logTakeover})
	if err != nil {
		return err
	}
	return nil
}

// LeasesMissing reports whether a lease this host holds has vanished from
// the store (Consul lost or replaced its data, or a peer removed it as
// expired while this host was cut off): it is then renewed at once rather
// than at the next scheduled renewal, since peers drop routes to it.
func (d *Driver) LeasesMissing(ctx context.Context) (bool, error) {
	pools, err := d.cfg.State.Pools(ctx)
	if err != nil {
		return false, err
	}
	for _, p := range pools {
		hostID, err := d.hostID(ctx, p.Pool)
		if err != nil {
			return false, err
		}
		// One read of the lease, not a listing of the pool: this runs on
		// every host every resync interval.
		held, err := d.cfg.Registry.Held(ctx, p.Pool, p.Subnet, hostID)
		if err != nil {
			return false, err
		}
		if !held {
			return true, nil
		}
	}
	return false, nil
}

// releaseLease gives this host's lease of p's subnet back; a failure is
// only logged (as what), since the lease then expires by itself.
func (d *Driver) releaseLease(ctx context.Context, p state.Pool, what string) {
	hostID, err := d.hostID(ctx, p.Pool)
	if err == nil {
		err = d.cfg.Registry.Release(ctx, p.Pool, p.Subnet, hostID)
	}
	if err != nil {
		d.cfg.Log.Warn(what, "subnet", p.Subnet, "err", err)
	}
}

// hostID is the ID this host's leases carry.
func (d *Driver) hostID(ctx context.Context, pool netip.Prefix) (string, error) {
	if d.cfg.HostID != "" {
		return d.cfg.HostID, nil
	}
	owner, err := d.cfg.Owner(ctx, pool)
	return owner.HostID, err
}
