package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// Recover runs at start-up: it rebuilds the kernel state of every recorded
// network (bridge, firewall, overlay) and removes felt's bridges and veths
// whose network or endpoint no longer exists, left over from a crash or from
// deletes Docker sent while the plugin was down. It carries on past errors
// and returns them joined.
func (d *Driver) Recover(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	nets, err := d.cfg.State.Networks(ctx)
	if err != nil {
		return err
	}
	eps, err := d.cfg.State.Endpoints(ctx)
	if err != nil {
		return err
	}
	knownNet := map[string]bool{}
	for _, n := range nets {
		knownNet[n.ID] = true
	}
	knownEp := map[string]bool{}
	for _, ep := range eps {
		if knownNet[ep.NetworkID] {
			knownEp[ep.ID] = true
			continue
		}
		// Its network is gone (DeleteNetwork carries on past an endpoint
		// it could not remove): the record goes, and its veth below.
		d.cfg.Log.Info("removing the record of an endpoint whose network is gone", "endpoint", short(ep.ID, 12))
		if err := d.cfg.State.DeleteEndpoint(ctx, ep.ID); err != nil {
			errs = append(errs, err)
		}
	}
	bridges, veths, err := d.feltLinks()
	if err != nil {
		return err
	}
	for id, link := range veths {
		if !knownEp[id] {
			d.cfg.Log.Info("removing orphaned veth", "veth", link.Attrs().Name)
			if err := d.deleteLink(link); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for id, link := range bridges {
		if !knownNet[id] {
			d.cfg.Log.Info("removing orphaned bridge", "bridge", link.Attrs().Name)
			if err := d.deleteLink(link); err != nil {
				errs = append(errs, err)
			}
		}
	}
	restored := map[string]state.Network{}
	for _, n := range nets {
		if err := d.ensureNetwork(ctx, n, nets...); err != nil {
			d.cfg.Log.Error("could not restore network", "network", short(n.ID, 12), "err", err)
			errs = append(errs, err)
			continue
		}
		restored[n.ID] = n
	}
	// A bridge made again (it went while felt was down) lost its ports
	// as it went: the endpoints' veths go back on it.
	for _, ep := range eps {
		if n, ok := restored[ep.NetworkID]; ok {
			if err := d.ensurePort(n, ep); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(nets) == 0 {
		// Nothing of felt's should remain, stale rules included.
		if err := d.syncFirewall(ctx, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Shutdown runs when the plugin stops: with no felt network left on the host
// it also removes felt's firewall chain, so `docker plugin disable` after
// the last `docker network rm` leaves nothing of felt's in the kernel.
// Networks that remain keep their rules, so their traffic keeps flowing.
func (d *Driver) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	nets, err := d.cfg.State.Networks(ctx)
	if err != nil || len(nets) > 0 || d.cfg.Firewall == nil {
		return err
	}
	return d.cfg.Firewall.Remove()
}

// Reassert writes this host's networks back into the shared store where
// their records are missing or incomplete (the store lost its data, or was
// replaced), with the options this host created them with. Called before
// leases are renewed, so a renewal never recreates a record that lacks the
// backend and VNI the network runs with. A conflicting record written
// meanwhile by another host is reported, not overwritten.
func (d *Driver) Reassert(ctx context.Context) error {
	nets, err := d.cfg.State.Networks(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range nets {
		dr := n.DirectRouting
		spec := lease.Spec{Backends: d.cfg.Backends, Pool: n.Pool, SubnetLen: n.Subnet.Bits(), Backend: n.Backend, VNI: n.VNI, Port: n.Port, DirectRouting: &dr}
		if _, err := d.cfg.Registry.SettleNetwork(ctx, spec); err != nil {
			errs = append(errs, fmt.Errorf("network %.12s: %w", n.ID, err))
		}
	}
	return errors.Join(errs...)
}
