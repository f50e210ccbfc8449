package vxlan

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/lease"
)

// One FDB entry per MAC. The kernel keeps one destination for each of
// felt's FDB entries (a write replaces it), but a host holding two leases
// of the pool (a restart that leased anew before its old lease expired)
// publishes one VTEP MAC in both, at two public IPs when its address
// changed in between. The MAC's entry must point at one of them, and at
// one that remains when the other lease goes: counting uses per (MAC,
// destination) deleted the entry with the lease whose destination it had
// last been given, though the other lease still used the MAC, until the
// next full Sync. So the record keeps, per MAC, the destination it gave
// the entry and how many leases use the MAC; a lease that goes moves the
// entry to a remaining one's destination, or deletes it with the last.
//
// Of a MAC's leases, the entry takes the destination of the one that
// expires last (prefer): the one its host still renews, at the address it
// has now, rather than the leftover lease at its old address. A full Sync
// chooses before it writes, so it writes the entry once and the same way
// every time (the last peer's destination won before, alternating between
// Syncs as the kernel's listing did).

// fdbUse is a MAC's FDB entry as the record knows it.
type fdbUse struct {
	dst   netip.Addr // the entry's destination, as last chosen
	exp   time.Time  // the expiry of the lease dst was chosen for (Sync's offer)
	users int        // the record's entries with the MAC
}

// prefer reports whether destination a, of a lease expiring at ea, is to
// be preferred to b (eb) as a MAC's FDB destination: the later expiry
// (zero: never, the latest); at a tie the one the kernel has (has), then
// the lower address, so that every sync chooses alike.
func prefer(a netip.Addr, ea time.Time, b netip.Addr, eb time.Time, has func(netip.Addr) bool) bool {
	switch {
	case ea.Equal(eb):
	case ea.IsZero():
		return true
	case eb.IsZero():
		return false
	default:
		return ea.After(eb)
	}
	if ha, hb := has(a), has(b); ha != hb {
		return ha
	}
	return a.Less(b)
}

// offer makes p's public IP mac's destination in a full Sync's record if
// it is preferred to the one offered before; cur is what the kernel had.
func (r *record) offer(mac string, p lease.Lease, cur current) {
	u, ok := r.fdb[mac]
	has := func(d netip.Addr) bool { return cur.fdb[fdbKey{mac: mac, dst: d}] }
	if !ok || prefer(p.PublicIP, p.Expiry, u.dst, u.exp, has) {
		u.dst, u.exp = p.PublicIP, p.Expiry
		r.fdb[mac] = u
	}
}

// fdbDst is the destination chosen for mac (zero for "": no MAC).
func (r *record) fdbDst(mac string) netip.Addr {
	if mac == "" {
		return netip.Addr{}
	}
	return r.fdb[mac].dst
}

// wrote records that mac's FDB entry now goes to dst.
func (r *record) wrote(mac string, dst netip.Addr) {
	u := r.fdb[mac]
	u.dst = dst
	r.fdb[mac] = u
}

// chooseWith is the destination mac's FDB entry takes once p (with mac)
// is the lease of p.Subnet: p's public IP, unless another recorded lease
// with mac is preferred. The others are looked for only when there are
// any, which is rare (a host with two leases).
func (r *record) chooseWith(mac string, p lease.Lease) netip.Addr {
	others := r.fdb[mac].users
	if old, ok := r.entries[p.Subnet]; ok && old.mac == mac {
		others--
	}
	if others <= 0 {
		return p.PublicIP
	}
	return r.choose(mac, p.Subnet, p.PublicIP, p.Expiry)
}

// choose is the preferred destination of mac among the recorded entries
// with mac other than except's, and dst (of a lease expiring at exp) if
// valid. It walks every entry: called only for a MAC in several.
func (r *record) choose(mac string, except netip.Prefix, dst netip.Addr, exp time.Time) netip.Addr {
	cur := r.fdb[mac].dst
	has := func(d netip.Addr) bool { return d == cur }
	for subnet, e := range r.entries {
		if e.mac != mac || subnet == except {
			continue
		}
		if !dst.IsValid() || prefer(e.dst, e.expiry, dst, exp, has) {
			dst, exp = e.dst, e.expiry
		}
	}
	return dst
}

// fixFDB brings mac's FDB entry in line with the record after an entry
// with mac went (or took another MAC): deleted when no entry uses mac any
// more, else moved to the preferred remaining destination if it is not
// that already.
func (b *Backend) fixFDB(vtep netlink.Link, rec *record, mac string) error {
	u, ok := rec.fdb[mac]
	if !ok {
		return nil
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("fdb %s: %w", mac, err)
	}
	idx := vtep.Attrs().Index
	if u.users <= 0 {
		delete(rec.fdb, mac)
		// Gone already (a VTEP being replaced): done.
		if err := b.cfg.Netlink.NeighDel(fdbEntry(idx, hw, u.dst)); err != nil && !nlerr.IsNotFound(err) {
			return fmt.Errorf("delete fdb %s dst %s: %w", mac, u.dst, err)
		}
		return nil
	}
	dst := rec.choose(mac, netip.Prefix{}, netip.Addr{}, time.Time{})
	if dst == u.dst {
		return nil
	}
	if err := b.cfg.Netlink.NeighSet(fdbEntry(idx, hw, dst)); err != nil {
		return fmt.Errorf("fdb %s dst %s: %w", mac, dst, err)
	}
	rec.wrote(mac, dst)
	return nil
}
