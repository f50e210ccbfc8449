package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/lease"
)

// vxlanState is what Sync wants on the VTEP and in the route table.
type vxlanState struct {
	routes map[routeKey]bool
	neigh  map[netip.Addr]string // peer VTEP address (.0) -> MAC
	fdb    map[fdbKey]bool
}

// fdbKey is one FDB entry: frames for mac go to the VTEP at dst.
type fdbKey struct {
	mac string
	dst netip.Addr
}

// Sync programs every peer (a direct route when directrouting is on and the
// peer shares the underlay's segment, else neighbour, FDB entry and route
// through the VTEP) and then removes whatever felt entries match no peer.
// Adding before removing means a peer whose entries change keeps working.
func (b *vxlan) Sync(ctx context.Context, n Network, peers []lease.Lease) error {
	name := VTEPName(n.VNI)
	vtep, err := b.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("vxlan %s: %w (Setup must create it first)", name, err)
	}
	var u underlay
	if n.DirectRouting {
		if u, err = lookupUnderlay(b.nl, b.host); err != nil {
			return fmt.Errorf("vxlan %s: directrouting: %w", name, err)
		}
	}
	want := vxlanState{routes: map[routeKey]bool{}, neigh: map[netip.Addr]string{}, fdb: map[fdbKey]bool{}}
	var errs []error
	for _, p := range peers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := checkPeer(n, p); err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
			continue
		}
		if n.DirectRouting && u.direct(p.PublicIP) == nil {
			r := peerRoute(p.Subnet, p.PublicIP, u.link.Attrs().Index, false)
			want.routes[keyOf(r)] = true
			if err := b.nl.RouteReplace(&r); err != nil {
				errs = append(errs, fmt.Errorf("vxlan %s: direct route %s via %s dev %s: %w", name, p.Subnet, p.PublicIP, u.name(), err))
			}
			continue
		}
		if err := b.program(vtep, p, want); err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: peer %s (subnet %s): %w", name, p.HostID, p.Subnet, err))
		}
	}
	if err := b.prune(n, vtep, want); err != nil {
		errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
	}
	return errors.Join(errs...)
}

// program installs one peer's entries in flannel's order: the neighbour
// entry and FDB entry first, so that when the route appears, packets using
// it find a MAC and a destination rather than a failed lookup. The entries
// are marked wanted before they are installed: a failure to update one must
// not make prune delete the working one that is there.
func (b *vxlan) program(vtep netlink.Link, p lease.Lease, want vxlanState) error {
	mac, err := net.ParseMAC(p.VtepMAC)
	if err != nil || len(mac) != 6 {
		return fmt.Errorf("VTEP MAC %q in lease is not a MAC address (is that host running another backend?)", p.VtepMAC)
	}
	gw := p.Subnet.Addr() // the peer VTEP's address, its subnet's .0
	idx := vtep.Attrs().Index
	r := peerRoute(p.Subnet, gw, idx, true)
	want.neigh[gw] = mac.String()
	want.fdb[fdbKey{mac: mac.String(), dst: p.PublicIP}] = true
	want.routes[keyOf(r)] = true

	neigh := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		Type: unix.RTN_UNICAST, IP: ipOf(gw), HardwareAddr: mac}
	if err := b.nl.NeighSet(neigh); err != nil {
		return fmt.Errorf("neighbour %s lladdr %s: %w", gw, mac, err)
	}
	fdb := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: ipOf(p.PublicIP), HardwareAddr: mac}
	if err := b.nl.NeighSet(fdb); err != nil {
		return fmt.Errorf("fdb %s dst %s: %w", mac, p.PublicIP, err)
	}
	if err := b.nl.RouteReplace(&r); err != nil {
		return fmt.Errorf("route %s via %s onlink: %w", p.Subnet, gw, err)
	}
	return nil
}

// prune removes the VTEP's neighbour and FDB entries and felt's routes into
// the pool that no peer wants: peers that left, died while felt was down, or
// moved to a direct route.
func (b *vxlan) prune(n Network, vtep netlink.Link, want vxlanState) error {
	var errs []error
	routes, err := pruneRoutes(b.nl, n.Pool, want.routes)
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
func (b *vxlan) pruneNeigh(vtep netlink.Link, want vxlanState) (int, error) {
	idx := vtep.Attrs().Index
	list, err := retryDump(func() ([]netlink.Neigh, error) { return b.nl.NeighList(idx, netlink.FAMILY_V4) })
	if err != nil {
		return 0, fmt.Errorf("list neighbours: %w", err)
	}
	removed := 0
	var errs []error
	for _, e := range list {
		ip := addrOf(e.IP)
		if mac, ok := want.neigh[ip]; ok && mac == e.HardwareAddr.String() {
			continue
		}
		del := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, IP: e.IP}
		if err := b.nl.NeighDel(del); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete stale neighbour %s: %w", ip, err))
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

// pruneFDB deletes the VTEP's unicast FDB entries other than the wanted
// ones. Multicast and all-zero entries are left: felt never makes them, and
// the kernel lists the device's own multicast addresses among them.
func (b *vxlan) pruneFDB(vtep netlink.Link, want vxlanState) (int, error) {
	idx := vtep.Attrs().Index
	list, err := retryDump(func() ([]netlink.Neigh, error) { return b.nl.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return 0, fmt.Errorf("list fdb: %w", err)
	}
	removed := 0
	var errs []error
	for _, e := range list {
		mac := e.HardwareAddr
		if len(mac) != 6 || mac[0]&1 != 0 || isZero(mac) {
			continue
		}
		dst := addrOf(e.IP)
		if want.fdb[fdbKey{mac: mac.String(), dst: dst}] {
			continue
		}
		del := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, IP: e.IP, HardwareAddr: mac}
		if err := b.nl.NeighDel(del); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete stale fdb %s dst %s: %w", mac, dst, err))
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
