package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// wanted is what Sync wants on the VTEP and in the route table.
type wanted struct {
	routes map[kernel.RouteKey]bool
	neigh  map[netip.Addr]string // peer VTEP address (.0) -> MAC
	fdb    map[fdbKey]bool
}

// fdbKey is one FDB entry: frames for mac go to the VTEP at dst.
type fdbKey struct {
	mac string
	dst netip.Addr
}

// A peer's vxlan entries on the VTEP: addNeighbour adds them, pruneNeigh and
// pruneFDB remove those no peer wants.

// addNeighbour installs one peer's entries on the VTEP in flannel's order:
// the neighbour entry (the peer VTEP's address, its subnet's .0, at the
// peer's VTEP MAC) and the FDB entry (that MAC is behind the peer's public
// IP) first, so that when the route through the VTEP appears, packets using
// it find a MAC and a destination rather than a failed lookup. The entries
// are marked wanted before they are installed: a failure to update one must
// not make prune delete the working one that is there. cur holds what the
// kernel has (zero: nothing known, everything is written). w holds the
// lease's MAC; its FDB entry goes to fdbDst, p's public IP unless another
// lease with that MAC is preferred (fdb.go). It returns the peer's
// entries, for SyncPeers' record (delta.go).
func (b *Backend) addNeighbour(vtep netlink.Link, p lease.Lease, w way, fdbDst netip.Addr, want wanted, cur current) (entry, error) {
	mac := w.mac
	gw := p.Subnet.Addr() // the peer VTEP's address, its subnet's .0
	idx := vtep.Attrs().Index
	r := kernel.PeerRoute(p.Subnet, gw, idx, true)
	e := entry{route: r, mac: w.macStr, dst: p.PublicIP, expiry: p.Expiry}
	want.neigh[gw] = e.mac
	want.fdb[fdbKey{mac: e.mac, dst: fdbDst}] = true
	want.routes[kernel.KeyOf(r)] = true

	if cur.neigh[gw] != e.mac {
		neigh := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			Type: unix.RTN_UNICAST, IP: kernel.IPOf(gw), HardwareAddr: mac}
		if err := b.cfg.Netlink.NeighSet(neigh); err != nil {
			return e, fmt.Errorf("neighbour %s lladdr %s: %w", gw, mac, err)
		}
	}
	if !cur.fdb[fdbKey{mac: e.mac, dst: fdbDst}] {
		if err := b.cfg.Netlink.NeighSet(fdbEntry(idx, mac, fdbDst)); err != nil {
			return e, fmt.Errorf("fdb %s dst %s: %w", mac, fdbDst, err)
		}
	}
	if kernel.Has(cur.routes, r) {
		return e, nil
	}
	if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
		return e, fmt.Errorf("route %s via %s onlink: %w", p.Subnet, gw, err)
	}
	return e, nil
}

// current is what the VTEP holds before a sync: its permanent neighbour
// entries (address → MAC), its FDB entries, and felt's routes into the
// pool. A sync writes only what differs: it wrote three entries per peer
// whatever changed, 30,000 netlink requests per change with 10,000 peers.
// The listings are kept for prune, which works from them: each table is
// dumped once per sync, not twice. A listing that failed is nil (ok*
// false): everything is written, and nothing of that kind pruned.
type current struct {
	neigh  map[netip.Addr]string
	fdb    map[fdbKey]bool
	routes map[kernel.RouteKey]int

	neighList, fdbList []netlink.Neigh
	routeList          []netlink.Route
	okNeigh, okFDB     bool
	okRoutes           bool
}

// current dumps the VTEP's neighbours and FDB and felt's routes into pool;
// it returns what it could list and the errors of what it could not.
func (b *Backend) current(vtep netlink.Link, pool netip.Prefix) (current, error) {
	idx := vtep.Attrs().Index
	cur := current{neigh: map[netip.Addr]string{}, fdb: map[fdbKey]bool{}}
	var errs []error
	neigh, err := kernel.RetryDump(func() ([]netlink.Neigh, error) { return b.cfg.Netlink.NeighList(idx, netlink.FAMILY_V4) })
	if err != nil {
		errs = append(errs, fmt.Errorf("list neighbours: %w", err))
	} else {
		cur.neighList, cur.okNeigh = neigh, true
	}
	for _, e := range neigh {
		if e.State&netlink.NUD_PERMANENT != 0 {
			cur.neigh[kernel.AddrOf(e.IP)] = e.HardwareAddr.String()
		}
	}
	fdb, err := kernel.RetryDump(func() ([]netlink.Neigh, error) { return b.cfg.Netlink.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		errs = append(errs, fmt.Errorf("list fdb: %w", err))
	} else {
		cur.fdbList, cur.okFDB = fdb, true
	}
	for _, e := range fdb {
		if e.State&netlink.NUD_PERMANENT != 0 {
			cur.fdb[fdbKey{mac: e.HardwareAddr.String(), dst: kernel.AddrOf(e.IP)}] = true
		}
	}
	routes, err := kernel.Owned(b.cfg.Netlink, pool)
	if err != nil {
		errs = append(errs, err)
	} else {
		cur.routeList, cur.okRoutes = routes, true
	}
	cur.routes = kernel.InstalledOf(routes)
	return cur, errors.Join(errs...)
}

// pruneNeigh deletes the IPv4 neighbour entries of list (the VTEP's, as
// listed before the sync) at addresses no peer wants. The VTEP is felt's,
// so every entry on it is felt's to judge. An entry at a wanted address
// stays whatever its MAC: the sync has set that address's MAC since, and
// deleting by address would delete the new entry.
func (b *Backend) pruneNeigh(vtep netlink.Link, list []netlink.Neigh, want wanted) (int, error) {
	idx := vtep.Attrs().Index
	return b.pruneEntries(list, "neighbour", func(e netlink.Neigh) (*netlink.Neigh, string) {
		ip := kernel.AddrOf(e.IP)
		if _, ok := want.neigh[ip]; ok {
			return nil, ""
		}
		return &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, IP: e.IP}, ip.String()
	})
}

// pruneFDB deletes the unicast FDB entries of list (the VTEP's, as listed
// before the sync) other than the wanted ones. Multicast and all-zero
// entries are left: felt never makes them, and the kernel lists the
// device's own multicast addresses among them. An entry the sync replaced
// (the MAC's destination moved) is deleted by MAC and old destination,
// which the kernel no longer has: ENOENT, taken for done.
func (b *Backend) pruneFDB(vtep netlink.Link, list []netlink.Neigh, want wanted) (int, error) {
	idx := vtep.Attrs().Index
	return b.pruneEntries(list, "fdb", func(e netlink.Neigh) (*netlink.Neigh, string) {
		mac := e.HardwareAddr
		if len(mac) != 6 || mac[0]&1 != 0 || isZero(mac) {
			return nil, ""
		}
		dst := kernel.AddrOf(e.IP)
		if want.fdb[fdbKey{mac: mac.String(), dst: dst}] {
			return nil, ""
		}
		return fdbEntry(idx, mac, dst), fmt.Sprintf("%s dst %s", mac, dst)
	})
}

// fdbEntry is the FDB entry sending frames for mac to dst on the VTEP idx.
func fdbEntry(idx int, mac net.HardwareAddr, dst netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: kernel.IPOf(dst), HardwareAddr: mac}
}

// pruneEntries deletes the entries of list (neighbours or FDB, one names
// them in errors) that stale says to: it returns the delete request and
// how to name the entry, or nil to keep it.
func (b *Backend) pruneEntries(list []netlink.Neigh, one string, stale func(netlink.Neigh) (*netlink.Neigh, string)) (int, error) {
	removed := 0
	var errs []error
	for _, e := range list {
		del, name := stale(e)
		if del == nil {
			continue
		}
		if err := b.cfg.Netlink.NeighDel(del); nlerr.IsNotFound(err) {
			continue // replaced by the sync, or gone meanwhile
		} else if err != nil {
			errs = append(errs, fmt.Errorf("delete stale %s %s: %w", one, name, err))
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

func isZero(mac net.HardwareAddr) bool {
	for _, b := range mac {
		if b != 0 {
			return false
		}
	}
	return true
}
