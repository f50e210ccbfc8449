package vxlan

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

// Sync programs every peer (a direct route when directrouting is on and the
// peer shares the underlay's segment, else neighbour, FDB entry and route
// through the VTEP) and then removes whatever felt entries match no peer.
// Adding before removing means a peer whose entries change keeps working.
func (b *Backend) Sync(ctx context.Context, n overlay.Network, peers []lease.Lease) error {
	name := VTEPName(n.VNI)
	vtep, err := b.cfg.Netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("vxlan %s: %w (Setup must create it first)", name, err)
	}
	var u kernel.Underlay
	if n.DirectRouting {
		if u, err = kernel.LookupUnderlay(b.cfg.Netlink, b.cfg.Host); err != nil {
			return fmt.Errorf("vxlan %s: directrouting: %w", name, err)
		}
	}
	want := wanted{routes: map[kernel.RouteKey]bool{}, neigh: map[netip.Addr]string{}, fdb: map[fdbKey]bool{}}
	var errs []error
	// What is there already is not written again. A listing that fails
	// leaves cur empty: everything is written, as a first sync does.
	cur, err := b.current(vtep, n.Pool)
	if err != nil {
		errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
	}
	for _, p := range peers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := overlay.CheckPeer(n, p); err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
			continue
		}
		if n.DirectRouting && u.Direct(p.PublicIP) == nil {
			r := kernel.PeerRoute(p.Subnet, p.PublicIP, u.Link.Attrs().Index, false)
			want.routes[kernel.KeyOf(r)] = true
			if kernel.Has(cur.routes, r) {
				continue
			}
			if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
				errs = append(errs, fmt.Errorf("vxlan %s: direct route %s via %s dev %s: %w", name, p.Subnet, p.PublicIP, u.Name(), err))
			}
			continue
		}
		if err := b.addNeighbour(vtep, p, want, cur); err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: peer %s (subnet %s): %w", name, p.HostID, p.Subnet, err))
		}
	}
	if err := b.prune(n, vtep, want); err != nil {
		errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
	}
	return errors.Join(errs...)
}

// prune removes the VTEP's neighbour and FDB entries and felt's routes into
// the pool that no peer wants: peers that left, died while felt was down, or
// moved to a direct route.
func (b *Backend) prune(n overlay.Network, vtep netlink.Link, want wanted) error {
	var errs []error
	routes, err := kernel.PruneRoutes(b.cfg.Netlink, n.Pool, want.routes)
	if err != nil {
		errs = append(errs, err)
	}
	neigh, err := b.pruneNeigh(vtep, want)
	if err != nil {
		errs = append(errs, err)
	}
	fdb, err := b.pruneFDB(vtep, want)
	if err != nil {
		errs = append(errs, err)
	}
	if len(routes)+neigh+fdb > 0 {
		b.cfg.Log.Info("removed stale entries", "network", n.ID, "device", vtep.Attrs().Name,
			"routes", routes, "neighbours", neigh, "fdb", fdb)
	}
	return errors.Join(errs...)
}
