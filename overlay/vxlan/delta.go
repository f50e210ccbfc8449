package vxlan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

var _ overlay.DeltaSyncer = (*Backend)(nil)

// entry is what a sync installed for one peer: its route, and for a peer
// through the VTEP (mac set) the neighbour entry at the route's gateway;
// dst and expiry are the lease's public IP and expiry, which of the leases
// with its MAC the MAC's FDB entry goes to (fdb.go).
type entry struct {
	route  netlink.Route
	mac    string
	dst    netip.Addr
	expiry time.Time
}

// record is what a network's last successful Sync left in the kernel, and
// the SyncPeers since: the devices its entries are on, each peer's
// entries, and each MAC's FDB entry, so that SyncPeers can remove a
// departed or changed peer's entries without dumping the VTEP's tables.
type record struct {
	vtep, underlay int // ifindexes (underlay: 0 without directrouting)
	entries        map[netip.Prefix]entry
	// fdb is, by MAC, the destination its FDB entry was given and how
	// many entries use it (fdb.go).
	fdb map[string]fdbUse
}

func newRecord(vtep netlink.Link, u kernel.Underlay, size int) *record {
	r := &record{vtep: vtep.Attrs().Index, entries: make(map[netip.Prefix]entry, size), fdb: make(map[string]fdbUse, size)}
	if u.Link != nil {
		r.underlay = u.Link.Attrs().Index
	}
	return r
}

// add records subnet's entries (replacing any), counting a use of its MAC.
func (r *record) add(subnet netip.Prefix, e entry) {
	r.drop(subnet)
	r.entries[subnet] = e
	if e.mac != "" {
		u := r.fdb[e.mac]
		u.users++
		r.fdb[e.mac] = u
	}
}

// drop forgets subnet's entries and returns them. Its MAC's FDB entry
// stays recorded, even with no user left: what becomes of it is fixFDB's.
func (r *record) drop(subnet netip.Prefix) (entry, bool) {
	e, ok := r.entries[subnet]
	if !ok {
		return entry{}, false
	}
	delete(r.entries, subnet)
	if e.mac != "" {
		u := r.fdb[e.mac]
		u.users--
		r.fdb[e.mac] = u
	}
	return e, true
}

// SyncPeers installs the entries of the changed peers and removes those of
// the removed subnets (and the changed peers' old ones that differ), from
// the record of the network's last Sync: no table is dumped, and only the
// peers named are written. It asks for a full Sync (overlay.ErrFullSyncNeeded)
// when there is no record (none yet, or the last sync failed) or the VTEP
// or underlay is not the device the record's entries are on (recreated
// since: its entries went with it).
func (b *Backend) SyncPeers(ctx context.Context, n overlay.Network, changed []lease.Lease, removed []netip.Prefix) error {
	name := VTEPName(n.VNI)
	rec := b.records.Take(n.ID)
	if rec == nil {
		return fmt.Errorf("vxlan %s: no record of a full sync: %w", name, overlay.ErrFullSyncNeeded)
	}
	vtep, err := b.cfg.Netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("vxlan %s: %w (Setup must create it first)", name, err)
	}
	if vtep.Attrs().Index != rec.vtep {
		return fmt.Errorf("vxlan %s: the VTEP was recreated: %w", name, overlay.ErrFullSyncNeeded)
	}
	var u kernel.Underlay
	if n.DirectRouting {
		if u, err = kernel.LookupUnderlay(b.cfg.Netlink, b.cfg.Host); err != nil {
			return fmt.Errorf("vxlan %s: directrouting: %w", name, err)
		}
		if u.Link.Attrs().Index != rec.underlay {
			return fmt.Errorf("vxlan %s: the underlay interface changed: %w", name, overlay.ErrFullSyncNeeded)
		}
	} else if rec.underlay != 0 {
		return fmt.Errorf("vxlan %s: directrouting was turned off: %w", name, overlay.ErrFullSyncNeeded)
	}
	// Written unconditionally: a changed peer's entries differ, or were
	// missing. The want maps are not used by anyone here.
	want := wanted{routes: map[kernel.RouteKey]bool{}, neigh: map[netip.Addr]string{}, fdb: map[fdbKey]bool{}}
	var errs []error
	for _, p := range changed {
		if err := ctx.Err(); err != nil {
			return err
		}
		w := wayOf(u, n, p)
		var dst netip.Addr
		if w.mac != nil {
			dst = rec.chooseWith(w.macStr, p)
		}
		e, err := b.program(vtep, u, p, w, dst, want, current{})
		if err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
			// A lease that cannot be programmed (no entry made) loses
			// what it had, as a full Sync would prune it; after a failed
			// write, the full Sync that follows the error sorts it out.
			if e.route.Dst == nil {
				if old, ok := rec.drop(p.Subnet); ok {
					errs = append(errs, b.remove(vtep, rec, p.Subnet, old, entry{})...)
				}
			}
			continue
		}
		old, had := rec.drop(p.Subnet)
		rec.add(p.Subnet, e)
		if e.mac != "" {
			rec.wrote(e.mac, dst)
		}
		if had {
			errs = append(errs, b.remove(vtep, rec, p.Subnet, old, e)...)
		}
	}
	for _, subnet := range removed {
		if err := ctx.Err(); err != nil {
			return err
		}
		old, ok := rec.drop(subnet)
		if !ok {
			continue // never installed (an invalid lease): nothing to remove
		}
		errs = append(errs, b.remove(vtep, rec, subnet, old, entry{})...)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	b.records.Remember(n.ID, rec)
	return nil
}

// remove deletes what of old (subnet's entries until now) now (its new
// entries; zero: none) does not hold, in the reverse of addNeighbour's
// order: the route first, so no packet takes it to a missing neighbour.
// Old's MAC's FDB entry, unless now's MAC is the same (its write chose the
// destination already), goes with its last user or moves to a remaining
// lease's destination (fixFDB). Anything already gone is done.
func (b *Backend) remove(vtep netlink.Link, rec *record, subnet netip.Prefix, old, now entry) []error {
	var errs []error
	idx := vtep.Attrs().Index
	// A route with the same destination was replaced in place by now's.
	if now.route.Dst == nil {
		if err := kernel.DelRoute(b.cfg.Netlink, old.route); err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: delete route %s: %w", vtep.Attrs().Name, subnet, err))
		}
	}
	if old.mac == "" {
		return errs
	}
	if now.mac == "" {
		gw := subnet.Addr()
		err := b.cfg.Netlink.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, IP: kernel.IPOf(gw)})
		if err != nil && !nlerr.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("vxlan %s: delete neighbour %s: %w", vtep.Attrs().Name, gw, err))
		}
	}
	if now.mac == old.mac {
		return errs
	}
	if err := b.fixFDB(vtep, rec, old.mac); err != nil {
		errs = append(errs, fmt.Errorf("vxlan %s: %w", vtep.Attrs().Name, err))
	}
	return errs
}
