package vxlan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

var _ overlay.DeltaSyncer = (*Backend)(nil)

// entry is what a sync installed for one peer: its route, and for a peer
// through the VTEP (mac set) the neighbour entry at the route's gateway
// and the FDB entry mac → dst.
type entry struct {
	route netlink.Route
	mac   string
	dst   netip.Addr
}

// record is what a network's last successful Sync left in the kernel, and
// the SyncPeers since: the devices its entries are on and each peer's
// entries, so that SyncPeers can remove a departed or changed peer's
// entries without dumping the VTEP's tables.
type record struct {
	vtep, underlay int // ifindexes (underlay: 0 without directrouting)
	entries        map[netip.Prefix]entry
	// fdb counts the peers using each FDB entry: a host holding two leases
	// of the pool (a restart that leased anew before its old lease
	// expired) has one MAC and public IP for both.
	fdb map[fdbKey]int
}

func newRecord(vtep netlink.Link, u kernel.Underlay, size int) *record {
	r := &record{vtep: vtep.Attrs().Index, entries: make(map[netip.Prefix]entry, size), fdb: map[fdbKey]int{}}
	if u.Link != nil {
		r.underlay = u.Link.Attrs().Index
	}
	return r
}

func (r *record) add(subnet netip.Prefix, e entry) {
	r.drop(subnet)
	r.entries[subnet] = e
	if e.mac != "" {
		r.fdb[fdbKey{mac: e.mac, dst: e.dst}]++
	}
}

// drop forgets subnet's entries and returns them.
func (r *record) drop(subnet netip.Prefix) (entry, bool) {
	e, ok := r.entries[subnet]
	if !ok {
		return entry{}, false
	}
	delete(r.entries, subnet)
	if e.mac != "" {
		k := fdbKey{mac: e.mac, dst: e.dst}
		if r.fdb[k]--; r.fdb[k] <= 0 {
			delete(r.fdb, k)
		}
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
		e, err := b.program(vtep, u, n, p, want, current{})
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
// order: the route first, so no packet takes it to a missing neighbour. An
// FDB entry another peer still uses stays; anything already gone is done.
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
	k := fdbKey{mac: old.mac, dst: old.dst}
	if rec.fdb[k] > 0 || (now.mac == old.mac && now.dst == old.dst) {
		return errs
	}
	mac, err := net.ParseMAC(old.mac)
	if err != nil {
		return append(errs, fmt.Errorf("vxlan %s: fdb %s: %w", vtep.Attrs().Name, old.mac, err))
	}
	// When only the destination moved, the new entry replaced the old
	// one's: deleting the old destination finds nothing (ENOENT), done.
	if err := b.cfg.Netlink.NeighDel(fdbEntry(idx, mac, old.dst)); err != nil && !nlerr.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("vxlan %s: delete fdb %s dst %s: %w", vtep.Attrs().Name, old.mac, old.dst, err))
	}
	return errs
}
