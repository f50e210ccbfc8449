package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/internal/nlerr"
)

// RouteProtocol marks every route felt installs (`ip route` shows it as
// "proto 76"). It is how Sync tells its own routes from everyone else's: it
// lists the routes with this protocol whose destination lies in the
// network's pool and deletes those no lease asks for, including routes left
// by an earlier run or by a host that died while felt was down. 76 (0x4c) is
// not assigned in the kernel's rtnetlink.h nor in iproute2's rt_protos.
const RouteProtocol netlink.RouteProtocol = 0x4c

// RouteKey identifies a route as Sync wants it: same destination, gateway
// and device. A route that differs in any of them is replaced.
type RouteKey struct {
	dst  netip.Prefix
	gw   netip.Addr
	link int
}

func KeyOf(r netlink.Route) RouteKey {
	k := RouteKey{link: r.LinkIndex}
	if r.Dst != nil {
		k.dst = PrefixOf(r.Dst)
	}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok {
		k.gw = gw.Unmap()
	}
	return k
}

// PeerRoute is the route felt installs for a peer's subnet: via gw on the
// device with index link; onlink when gw is the peer's VTEP address, which
// no local subnet holds.
func PeerRoute(dst netip.Prefix, gw netip.Addr, link int, onlink bool) netlink.Route {
	r := netlink.Route{
		Dst:       IPNet(dst),
		Gw:        net.IP(gw.AsSlice()),
		LinkIndex: link,
		Protocol:  RouteProtocol,
	}
	if onlink {
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	return r
}

// ownedRoutes lists the routes felt installed for pool's subnets, in the
// main table, on any device.
func ownedRoutes(nl *netlink.Handle, pool netip.Prefix) ([]netlink.Route, error) {
	all, err := RetryDump(func() ([]netlink.Route, error) {
		return nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := make([]netlink.Route, 0, len(all)) // grown by appends, it cost a tenth of a full sync's CPU at 10,000 peers
	for _, r := range all {
		if r.Dst != nil && Within(PrefixOf(r.Dst), pool) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Owned lists the routes felt installed for pool's subnets: one dump a
// sync can both compare with (InstalledOf) and prune from (PruneFrom), so
// that it dumps the table once, not twice.
func Owned(nl *netlink.Handle, pool netip.Prefix) ([]netlink.Route, error) {
	return ownedRoutes(nl, pool)
}

// Installed returns felt's routes into pool by key, with their flags, so a
// sync can skip writing a route that is there already: a sync rewrote every
// peer's route at every change, 10,000 netlink requests with 10,000 peers.
func Installed(nl *netlink.Handle, pool netip.Prefix) (map[RouteKey]int, error) {
	routes, err := ownedRoutes(nl, pool)
	if err != nil {
		return nil, err
	}
	return InstalledOf(routes), nil
}

// InstalledOf is Installed from routes already listed (Owned).
func InstalledOf(routes []netlink.Route) map[RouteKey]int {
	out := make(map[RouteKey]int, len(routes))
	for _, r := range routes {
		out[KeyOf(r)] = r.Flags
	}
	return out
}

// Has reports whether installed (Installed's answer; nil: nothing known)
// holds r as PeerRoute makes it: its key and its onlink flag.
func Has(installed map[RouteKey]int, r netlink.Route) bool {
	flags, ok := installed[KeyOf(r)]
	return ok && flags&int(netlink.FLAG_ONLINK) == r.Flags&int(netlink.FLAG_ONLINK)
}

// PruneRoutes deletes felt's routes into pool that are not in want; a nil
// want deletes them all. It returns what it deleted, for the log.
func PruneRoutes(nl *netlink.Handle, pool netip.Prefix, want map[RouteKey]bool) ([]netip.Prefix, error) {
	routes, err := ownedRoutes(nl, pool)
	if err != nil {
		return nil, err
	}
	return PruneFrom(nl, routes, want)
}

// PruneFrom deletes the routes of routes (Owned's listing, made before a
// sync's writes) that are not in want. A listed route the sync replaced
// since (same destination, another gateway or device) is no longer there
// to delete: the kernel answers ESRCH, taken for done.
func PruneFrom(nl *netlink.Handle, routes []netlink.Route, want map[RouteKey]bool) ([]netip.Prefix, error) {
	var removed []netip.Prefix
	var errs []error
	for _, r := range routes {
		k := KeyOf(r)
		if want[k] {
			continue
		}
		if err := nl.RouteDel(&r); nlerr.IsNotFound(err) {
			continue // replaced by the sync, or deleted meanwhile
		} else if err != nil {
			errs = append(errs, fmt.Errorf("delete stale route %s via %s: %w", k.dst, k.gw, err))
			continue
		}
		removed = append(removed, k.dst)
	}
	return removed, errors.Join(errs...)
}

// DelRoute deletes the route r (as PeerRoute made it); one already gone
// is no error.
func DelRoute(nl *netlink.Handle, r netlink.Route) error {
	if err := nl.RouteDel(&r); err != nil && !nlerr.IsNotFound(err) {
		return err
	}
	return nil
}

// RetryDump repeats a netlink dump the kernel reports as interrupted (the
// table changed meanwhile): acting on a partial listing could miss stale
// entries.
func RetryDump[T any](list func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var out []T
		out, err = list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}
