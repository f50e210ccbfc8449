package vxlan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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
	vtep, err := b.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("vxlan %s: %w (Setup must create it first)", name, err)
	}
	var u kernel.Underlay
	if n.DirectRouting {
		if u, err = kernel.LookupUnderlay(b.nl, b.host); err != nil {
			return fmt.Errorf("vxlan %s: directrouting: %w", name, err)
		}
	}
	want := wanted{routes: map[kernel.RouteKey]bool{}, neigh: map[netip.Addr]string{}, fdb: map[fdbKey]bool{}}
	var errs []error
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
			if err := b.nl.RouteReplace(&r); err != nil {
				errs = append(errs, fmt.Errorf("vxlan %s: direct route %s via %s dev %s: %w", name, p.Subnet, p.PublicIP, u.Name(), err))
			}
			continue
		}
		if err := b.addNeighbour(vtep, p, want); err != nil {
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
	routes, err := kernel.PruneRoutes(b.nl, n.Pool, want.routes)
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
		b.log.Info("removed stale entries", "network", n.ID, "device", vtep.Attrs().Name,
			"routes", routes, "neighbours", neigh, "fdb", fdb)
	}
	return errors.Join(errs...)
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
	list, err := kernel.RetryDump(func() ([]netlink.Neigh, error) { return b.nl.NeighList(idx, family) })
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
		if err := b.nl.NeighDel(del); err != nil && !kernel.IsNotFound(err) {
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
