package driver

import (
	"context"
	"errors"

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
	nets, err := d.networks(ctx)
	if err != nil {
		return err
	}
	eps, err := state.List[Endpoint](ctx, d.cfg.State, EndpointsPrefix)
	if err != nil {
		return err
	}
	knownNet := map[string]bool{}
	for _, n := range nets {
		knownNet[n.ID] = true
	}
	knownEp := map[string]bool{}
	for _, ep := range eps {
		knownEp[ep.ID] = true
	}
	bridges, veths, err := d.feltLinks()
	if err != nil {
		return err
	}
	for id, link := range veths {
		if !knownEp[id] {
			d.cfg.Log.Info("removing orphaned veth", "veth", link.Attrs().Name)
			if err := d.nl.LinkDel(link); err != nil && !isNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	for id, link := range bridges {
		if !knownNet[id] {
			d.cfg.Log.Info("removing orphaned bridge", "bridge", link.Attrs().Name)
			if err := d.nl.LinkDel(link); err != nil && !isNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	for _, n := range nets {
		if err := d.ensureNetwork(ctx, n, nets...); err != nil {
			d.cfg.Log.Error("could not restore network", "network", short(n.ID, 12), "err", err)
			errs = append(errs, err)
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
	nets, err := d.networks(ctx)
	if err != nil || len(nets) > 0 || d.cfg.Firewall == nil {
		return err
	}
	return d.cfg.Firewall.Remove()
}
