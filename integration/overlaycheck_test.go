package integration

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/vxlan"
	"github.com/felt-net/felt/testkit"
)

// Helpers for the tests of the overlay reconciler: reading a host's overlay
// state from its kernel, and waiting with a deadline short enough to tell a
// repair on an event from one by the periodic resync (set to an hour).

// longResync makes the periodic full reconcile too rare to hide a missing
// event-driven repair.
const longResync = "FELT_RESYNC_INTERVAL=1h"

// within polls cond until it holds or d has passed. d is far below the
// resync period of the hosts under test, so it fails when only the resync
// would have helped.
func within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, d)
}

// nlOf is a netlink handle in a host's namespace, closed at cleanup.
func nlOf(t testing.TB, ns string) *netlink.Handle {
	t.Helper()
	h, err := netns.GetFromName(ns)
	testkit.Must(t, err)
	nl, err := netlink.NewHandleAt(h)
	h.Close()
	testkit.Must(t, err)
	t.Cleanup(nl.Close)
	return nl
}

// overlayState is what felt put in one host's kernel for its overlays.
type overlayState struct {
	devices []string                // links named felt.* or feltu.*, or marked as felt's overlay devices
	routes  map[netip.Prefix]string // felt's routes (by protocol): destination -> "via GW dev DEV"
	neigh   map[netip.Addr]string   // permanent IPv4 neighbours on felt devices: address -> MAC
	fdb     map[string]netip.Addr   // unicast FDB entries on felt devices: MAC -> destination
	aliases map[string]string       // device -> alias
}

func readOverlay(t testing.TB, nl *netlink.Handle) overlayState {
	t.Helper()
	s := overlayState{routes: map[netip.Prefix]string{}, neigh: map[netip.Addr]string{}, fdb: map[string]netip.Addr{}, aliases: map[string]string{}}
	links, err := nl.LinkList()
	testkit.Must(t, err)
	names := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		if !strings.HasPrefix(a.Name, "felt.") && !strings.HasPrefix(a.Name, "feltu.") && !strings.Contains(a.Alias, ":overlay:") {
			continue
		}
		s.devices = append(s.devices, a.Name)
		s.aliases[a.Name] = a.Alias
		ns, err := nl.NeighList(a.Index, netlink.FAMILY_V4)
		testkit.Must(t, err)
		for _, n := range ns {
			if n.State&netlink.NUD_PERMANENT != 0 {
				ip, _ := netip.AddrFromSlice(n.IP)
				s.neigh[ip.Unmap()] = n.HardwareAddr.String()
			}
		}
		fdb, err := nl.NeighList(a.Index, unix.AF_BRIDGE)
		testkit.Must(t, err)
		for _, n := range fdb {
			if len(n.HardwareAddr) == 6 && n.HardwareAddr[0]&1 == 0 && n.HardwareAddr.String() != "00:00:00:00:00:00" {
				ip, _ := netip.AddrFromSlice(n.IP)
				s.fdb[n.HardwareAddr.String()] = ip.Unmap()
			}
		}
	}
	routes, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	testkit.Must(t, err)
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		s.routes[netip.PrefixFrom(dst.Unmap(), ones)] = "via " + r.Gw.String() + " dev " + names[r.LinkIndex]
	}
	return s
}

func (s overlayState) String() string {
	return fmt.Sprintf("devices %v, routes %v, neighbours %v, fdb %v", s.devices, s.routes, s.neigh, s.fdb)
}

func (s overlayState) empty() bool {
	return len(s.devices) == 0 && len(s.routes) == 0 && len(s.neigh) == 0 && len(s.fdb) == 0
}

// vxlanMismatch says how s differs from a vxlan network with this VNI
// whose peers hold exactly peers, or "" when it matches.
func (s overlayState) vxlanMismatch(vni int, networkID string, peers []lease.Lease) string {
	dev := vxlan.VTEPName(vni)
	if len(s.devices) != 1 || s.devices[0] != dev {
		return "devices " + strings.Join(s.devices, ",") + ", want only " + dev
	}
	if !strings.HasSuffix(s.aliases[dev], ":overlay:"+networkID) {
		return dev + " alias " + s.aliases[dev] + ", want the owner mark of network " + networkID
	}
	if len(s.routes) != len(peers) || len(s.neigh) != len(peers) || len(s.fdb) != len(peers) {
		return "entry counts differ from the peers'"
	}
	for _, p := range peers {
		gw := p.Subnet.Addr()
		switch {
		case s.routes[p.Subnet] != "via "+gw.String()+" dev "+dev:
			return "route " + p.Subnet.String() + ": " + s.routes[p.Subnet]
		case s.neigh[gw] != vxlan.LeaseVtepMAC(p):
			return "neighbour " + gw.String() + ": " + s.neigh[gw] + ", want " + vxlan.LeaseVtepMAC(p)
		case s.fdb[vxlan.LeaseVtepMAC(p)] != p.PublicIP:
			return "fdb " + vxlan.LeaseVtepMAC(p) + ": " + s.fdb[vxlan.LeaseVtepMAC(p)].String() + ", want " + p.PublicIP.String()
		}
	}
	return ""
}
