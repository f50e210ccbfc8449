package vxlan

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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

// addNeighbour installs one peer's entries on the VTEP in flannel's order:
// the neighbour entry (the peer VTEP's address, its subnet's .0, at the
// peer's VTEP MAC) and the FDB entry (that MAC is behind the peer's public
// IP) first, so that when the route through the VTEP appears, packets using
// it find a MAC and a destination rather than a failed lookup. The entries
// are marked wanted before they are installed: a failure to update one must
// not make prune delete the working one that is there.
func (b *Backend) addNeighbour(vtep netlink.Link, p lease.Lease, want wanted) error {
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

	neigh := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		Type: unix.RTN_UNICAST, IP: kernel.IPOf(gw), HardwareAddr: mac}
	if err := b.nl.NeighSet(neigh); err != nil {
		return fmt.Errorf("neighbour %s lladdr %s: %w", gw, mac, err)
	}
	fdb := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: kernel.IPOf(p.PublicIP), HardwareAddr: mac}
	if err := b.nl.NeighSet(fdb); err != nil {
		return fmt.Errorf("fdb %s dst %s: %w", mac, p.PublicIP, err)
	}
	if err := b.nl.RouteReplace(&r); err != nil {
		return fmt.Errorf("route %s via %s onlink: %w", p.Subnet, gw, err)
	}
	return nil
}
