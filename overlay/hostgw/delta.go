package hostgw

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

var _ overlay.DeltaSyncer = (*Backend)(nil)

// record is what a network's last successful Sync (and the SyncPeers
// since) left: the underlay interface its routes are on and each peer's
// route, so that SyncPeers removes a departed peer's route without dumping
// the route table.
type record struct {
	underlay int
	routes   map[netip.Prefix]netlink.Route
}

// SyncPeers routes the changed peers and removes the routes of the removed
// subnets, from the record of the last Sync: nothing is dumped. It asks for
// a full Sync (overlay.ErrFullSyncNeeded) when there is no record or the
// underlay interface is not the one the recorded routes are on.
func (b *Backend) SyncPeers(ctx context.Context, n overlay.Network, changed []lease.Lease, removed []netip.Prefix) error {
	rec := b.records.Take(n.ID)
	if rec == nil {
		return fmt.Errorf(Name+" %s: no record of a full sync: %w", n.Pool, overlay.ErrFullSyncNeeded)
	}
	u, err := kernel.LookupUnderlay(b.cfg.Netlink, b.cfg.Host)
	if err != nil {
		return fmt.Errorf(Name+" %s: %w", n.Pool, err)
	}
	if u.Link.Attrs().Index != rec.underlay {
		return fmt.Errorf(Name+" %s: the underlay interface changed: %w", n.Pool, overlay.ErrFullSyncNeeded)
	}
	var errs []error
	for _, p := range changed {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := b.route(n, u, p, nil)
		if err != nil {
			errs = append(errs, err)
			if r.Dst == nil { // no route for it: its old one goes, as a full Sync would prune it
				if old, ok := rec.routes[p.Subnet]; ok {
					delete(rec.routes, p.Subnet)
					if err := kernel.DelRoute(b.cfg.Netlink, old); err != nil {
						errs = append(errs, fmt.Errorf(Name+" %s: delete route %s: %w", n.Pool, p.Subnet, err))
					}
				}
			}
			continue
		}
		rec.routes[p.Subnet] = r // replaced the old one in place: same destination
	}
	for _, subnet := range removed {
		old, ok := rec.routes[subnet]
		if !ok {
			continue
		}
		delete(rec.routes, subnet)
		if err := kernel.DelRoute(b.cfg.Netlink, old); err != nil {
			errs = append(errs, fmt.Errorf(Name+" %s: delete route %s: %w", n.Pool, subnet, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	b.records.Remember(n.ID, rec)
	return nil
}
