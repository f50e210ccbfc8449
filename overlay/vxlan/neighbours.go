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
// not make prune delete the working one that is there.
func (b *Backend) addNeighbour(vtep netlink.Link, p lease.Lease, want wanted, cur current) error {
	mac, err := peerMAC(p)
	if err != nil {
		return err
	}
	gw := p.Subnet.Addr() // the peer VTEP's address, its subnet's .0
	idx := vtep.Attrs().Index
	r := kernel.PeerRoute(p.Subnet, gw, idx, true)
	want.neigh[gw] = mac.String()
	want.fdb[fdbKey{mac: mac.String(), dst: p.PublicIP}] = true
	want.routes[kernel.KeyOf(r)] = true

	if cur.neigh[gw] != mac.String() {
		neigh := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			Type: unix.RTN_UNICAST, IP: kernel.IPOf(gw), HardwareAddr: mac}
		if err := b.cfg.Netlink.NeighSet(neigh); err != nil {
			return fmt.Errorf("neighbour %s lladdr %s: %w", gw, mac, err)
		}
	}
	if !cur.fdb[fdbKey{mac: mac.String(), dst: p.PublicIP}] {
		fdb := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, IP: kernel.IPOf(p.PublicIP), HardwareAddr: mac}
		if err := b.cfg.Netlink.NeighSet(fdb); err != nil {
			return fmt.Errorf("fdb %s dst %s: %w", mac, p.PublicIP, err)
		}
	}
	if kernel.Has(cur.routes, r) {
		return nil
	}
	if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
		return fmt.Errorf("route %s via %s onlink: %w", p.Subnet, gw, err)
	}
	return nil
}

// current is what the VTEP holds before a sync: its permanent neighbour
// entries (address → MAC), its FDB entries, and felt's routes into the
// pool. A sync writes only what differs: it wrote three entries per peer
// whatever changed, 30,000 netlink requests per change with 10,000 peers.
type current struct {
	neigh  map[netip.Addr]string
	fdb    map[fdbKey]bool
	routes map[kernel.RouteKey]int
}

func (b *Backend) current(vtep netlink.Link, pool netip.Prefix) (current, error) {
	idx := vtep.Attrs().Index
	cur := current{neigh: map[netip.Addr]string{}, fdb: map[fdbKey]bool{}}
	neigh, err := kernel.RetryDump(func() ([]netlink.Neigh, error) { return b.cfg.Netlink.NeighList(idx, netlink.FAMILY_V4) })
	if err != nil {
		return current{}, fmt.Errorf("list neighbours: %w", err)
	}
	for _, e := range neigh {
		if e.State&netlink.NUD_PERMANENT != 0 {
			cur.neigh[kernel.AddrOf(e.IP)] = e.HardwareAddr.String()
		}
	}
	fdb, err := kernel.RetryDump(func() ([]netlink.Neigh, error) { return b.cfg.Netlink.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return current{}, fmt.Errorf("list fdb: %w", err)
	}
	for _, e := range fdb {
		if e.State&netlink.NUD_PERMANENT != 0 {
			cur.fdb[fdbKey{mac: e.HardwareAddr.String(), dst: kernel.AddrOf(e.IP)}] = true
		}
	}
	if cur.routes, err = kernel.Installed(b.cfg.Netlink, pool); err != nil {
		return current{}, err
	}
	return cur, nil
}

// pruneNeigh deletes IPv4 neighbour entries on the VTEP other than the
// wanted ones. The VTEP is felt's, so every entry on it is felt's to judge.
func (b *Backend) pruneNeigh(vtep netlink.Link, want wanted) (int, error) {
	idx := vtep.Attrs().Index
	return b.pruneEntries(idx, netlink.FAMILY_V4, "neighbours", "neighbour", func(e netlink.Neigh) (*netlink.Neigh, string) {
		ip := kernel.AddrOf(e.IP)
		if mac, ok := want.neigh[ip]; ok && mac == e.HardwareAddr.String() {
			return nil, ""
		}
		return &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, IP: e.IP}, ip.String()
	})
}

// pruneFDB deletes the VTEP's unicast FDB entries other than the wanted
// ones. Multicast and all-zero entries are left: felt never makes them, and
// the kernel lists the device's own multicast addresses among them.
func (b *Backend) pruneFDB(vtep netlink.Link, want wanted) (int, error) {
	idx := vtep.Attrs().Index
	return b.pruneEntries(idx, unix.AF_BRIDGE, "fdb", "fdb", func(e netlink.Neigh) (*netlink.Neigh, string) {
		mac := e.HardwareAddr
		if len(mac) != 6 || mac[0]&1 != 0 || isZero(mac) {
			return nil, ""
		}
		dst := kernel.AddrOf(e.IP)
		if want.fdb[fdbKey{mac: mac.String(), dst: dst}] {
			return nil, ""
		}
		return &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, IP: e.IP, HardwareAddr: mac},
			fmt.Sprintf("%s dst %s", mac, dst)
	})
}

// pruneEntries lists the VTEP's entries of family (neighbours or FDB; all
// and one name them in errors) and deletes those stale says to: it returns
// the delete request and how to name the entry, or nil to keep it.
func (b *Backend) pruneEntries(idx, family int, all, one string, stale func(netlink.Neigh) (*netlink.Neigh, string)) (int, error) {
	list, err := kernel.RetryDump(func() ([]netlink.Neigh, error) { return b.cfg.Netlink.NeighList(idx, family) })
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", all, err)
	}
	removed := 0
	var errs []error
	for _, e := range list {
		del, name := stale(e)
		if del == nil {
			continue
		}
		if err := b.cfg.Netlink.NeighDel(del); err != nil && !nlerr.IsNotFound(err) {
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
