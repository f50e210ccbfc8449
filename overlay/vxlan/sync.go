package vxlan

import (
	"context"
	"errors"
	"fmt"
	"net"
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
// Each of the three tables is dumped once, before the writes: what is there
// already is not written again, and what no peer wants is pruned from that
// listing. A Sync without error records what it left, for SyncPeers.
func (b *Backend) Sync(ctx context.Context, n overlay.Network, peers []lease.Lease) error {
	b.records.Forget(n.ID) // until this Sync succeeds, SyncPeers cannot trust a record
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
	st := newRecord(vtep, u, len(peers))
	var errs []error
	// What is there already is not written again. A listing that fails
	// leaves its part of cur empty: everything is written, as a first sync
	// does, and nothing of that kind is pruned.
	cur, err := b.current(vtep, n.Pool)
	if err != nil {
		errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
	}
	// How each peer is reached (its MAC read once), and the destination
	// of each MAC's one FDB entry (fdb.go), before anything is written:
	// a MAC in two leases at two public IPs gets one destination, not the
	// last peer's, which differed from one Sync to the next.
	ways := make([]way, len(peers))
	for i, p := range peers {
		ways[i] = wayOf(u, n, p)
		if ways[i].mac != nil {
			st.offer(ways[i].macStr, p, cur)
		}
	}
	for i, p := range peers {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := b.program(vtep, u, p, ways[i], st.fdbDst(ways[i].macStr), want, cur)
		if err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
			continue
		}
		st.add(p.Subnet, e)
	}
	if err := b.prune(n, vtep, cur, want); err != nil {
		errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
	}
	if len(errs) == 0 {
		b.records.Remember(n.ID, st)
	}
	return errors.Join(errs...)
}

// way is how a peer is reached: by a direct route (directrouting on, the
// peer on the underlay's segment), or through the VTEP at its lease's MAC
// (none, with err, when the lease publishes no usable one).
type way struct {
	direct bool
	mac    net.HardwareAddr
	macStr string
	err    error
}

// wayOf is how p is reached; u is the underlay when directrouting is on.
func wayOf(u kernel.Underlay, n overlay.Network, p lease.Lease) way {
	if n.DirectRouting && u.Direct(p.PublicIP) == nil {
		return way{direct: true}
	}
	mac, err := peerMAC(p)
	if err != nil {
		return way{err: err}
	}
	return way{mac: mac, macStr: mac.String()}
}

// program installs peer p's entries (see Sync) the way w says, its MAC's
// FDB entry to fdbDst, writing only what cur does not hold, and marks them
// wanted. u is the underlay when directrouting is on (zero otherwise).
func (b *Backend) program(vtep netlink.Link, u kernel.Underlay, p lease.Lease, w way, fdbDst netip.Addr, want wanted, cur current) (entry, error) {
	if w.direct {
		r := kernel.PeerRoute(p.Subnet, p.PublicIP, u.Link.Attrs().Index, false)
		want.routes[kernel.KeyOf(r)] = true
		e := entry{route: r}
		if kernel.Has(cur.routes, r) {
			return e, nil
		}
		if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
			return e, fmt.Errorf("direct route %s via %s dev %s: %w", p.Subnet, p.PublicIP, u.Name(), err)
		}
		return e, nil
	}
	if w.err != nil {
		return entry{}, fmt.Errorf("peer %s (subnet %s): %w", p.HostID, p.Subnet, w.err)
	}
	e, err := b.addNeighbour(vtep, p, w, fdbDst, want, cur)
	if err != nil {
		return e, fmt.Errorf("peer %s (subnet %s): %w", p.HostID, p.Subnet, err)
	}
	return e, nil
}

// prune removes, from cur's listings, the VTEP's neighbour and FDB entries
// and felt's routes into the pool that no peer wants: peers that left, died
// while felt was down, or moved to a direct route.
func (b *Backend) prune(n overlay.Network, vtep netlink.Link, cur current, want wanted) error {
	var errs []error
	var routes []netip.Prefix
	var neigh, fdb int
	var err error
	if cur.okRoutes {
		if routes, err = kernel.PruneFrom(b.cfg.Netlink, cur.routeList, want.routes); err != nil {
			errs = append(errs, err)
		}
	}
	if cur.okNeigh {
		if neigh, err = b.pruneNeigh(vtep, cur.neighList, want); err != nil {
			errs = append(errs, err)
		}
	}
	if cur.okFDB {
		if fdb, err = b.pruneFDB(vtep, cur.fdbList, want); err != nil {
			errs = append(errs, err)
		}
	}
	if len(routes)+neigh+fdb > 0 {
		b.cfg.Log.Info("removed stale entries", "network", n.ID, "device", vtep.Attrs().Name,
			"routes", routes, "neighbours", neigh, "fdb", fdb)
	}
	return errors.Join(errs...)
}
