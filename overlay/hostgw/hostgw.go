package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/lease"
)

// hostGW is the "host-gw" backend: no encapsulation, a route per peer subnet
// via the peer's public IP. It needs every host on one L2 segment, since the
// next hop of a route must be one hop away.
type hostGW struct {
	nl   *netlink.Handle
	host Host
	log  *slog.Logger
}

// UnreachablePeerError says a peer's public IP is not on a subnet connected
// to the underlay interface, so a direct route via it cannot work.
type UnreachablePeerError struct {
	HostID   string
	Subnet   netip.Prefix
	PublicIP netip.Addr
	Reason   error
}

func (e *UnreachablePeerError) Error() string {
	return fmt.Sprintf("host-gw: peer %s (subnet %s) at %s is not directly reachable: %v; "+
		"host-gw routes each host's subnet via that host's public IP, so all hosts must be on one L2 segment "+
		"(one subnet of the underlay interface): use backend=vxlan (with directrouting=true to keep direct routes where possible)",
		e.HostID, e.Subnet, e.PublicIP, e.Reason)
}

func (e *UnreachablePeerError) Unwrap() error { return e.Reason }

// CheckHostGW returns an error naming every peer host-gw could not route to
// from this host (nil when all are on the underlay's segment). The driver
// can call it at network creation to refuse a layout that cannot work.
func CheckHostGW(host Host, nl *netlink.Handle, peers []lease.Lease) error {
	u, err := lookupUnderlay(orDefault(nl), host)
	if err != nil {
		return fmt.Errorf("host-gw: %w", err)
	}
	var errs []error
	for _, p := range peers {
		if err := u.direct(p.PublicIP); err != nil {
			errs = append(errs, &UnreachablePeerError{HostID: p.HostID, Subnet: p.Subnet, PublicIP: p.PublicIP, Reason: err})
		}
	}
	return errors.Join(errs...)
}

// Setup only checks the underlay interface exists: host-gw has no device.
func (b *hostGW) Setup(_ context.Context, n Network) error {
	if _, err := lookupUnderlay(b.nl, b.host); err != nil {
		return fmt.Errorf("host-gw %s: %w", n.Pool, err)
	}
	return nil
}

// Sync routes every reachable peer's subnet via its public IP and removes
// felt's other routes into the pool. Unreachable peers are logged and
// returned as errors, and get no route: a route via an address that is not
// one hop away would send the subnet's traffic nowhere.
func (b *hostGW) Sync(ctx context.Context, n Network, peers []lease.Lease) error {
	u, err := lookupUnderlay(b.nl, b.host)
	if err != nil {
		return fmt.Errorf("host-gw %s: %w", n.Pool, err)
	}
	want := map[routeKey]bool{}
	var errs []error
	for _, p := range peers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := checkPeer(n, p); err != nil {
			errs = append(errs, fmt.Errorf("host-gw %s: %w", n.Pool, err))
			continue
		}
		if err := u.direct(p.PublicIP); err != nil {
			e := &UnreachablePeerError{HostID: p.HostID, Subnet: p.Subnet, PublicIP: p.PublicIP, Reason: err}
			b.log.Error("host-gw cannot reach peer; no route installed", "network", n.ID, "peer", p.HostID,
				"subnet", p.Subnet, "publicIP", p.PublicIP, "underlay", u.name(), "err", e)
			errs = append(errs, e)
			continue
		}
		r := peerRoute(p.Subnet, p.PublicIP, u.link.Attrs().Index, false)
		want[keyOf(r)] = true
		if err := b.nl.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("host-gw %s: route %s via %s dev %s: %w", n.Pool, p.Subnet, p.PublicIP, u.name(), err))
		}
	}
	removed, err := pruneRoutes(b.nl, n.Pool, want)
	if len(removed) > 0 {
		b.log.Info("removed stale routes", "network", n.ID, "backend", "host-gw", "subnets", removed)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("host-gw %s: %w", n.Pool, err))
	}
	return errors.Join(errs...)
}

// Teardown removes felt's routes into the pool.
func (b *hostGW) Teardown(_ context.Context, n Network) error {
	if _, err := pruneRoutes(b.nl, n.Pool, nil); err != nil {
		return fmt.Errorf("host-gw %s: %w", n.Pool, err)
	}
	return nil
}
