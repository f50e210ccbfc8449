// Package hostgw is the "host-gw" backend: no encapsulation, a route per
// peer subnet via the peer's public IP. It needs every host on one L2
// segment, since the next hop of a route must be one hop away: Check
// (check.go) refuses a network whose peers are not, at creation.
package hostgw

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// Name selects the backend: -o backend=host-gw.
const Name = "host-gw"

// Backend is the host-gw backend of one host.
type Backend struct {
	cfg overlay.BackendConfig

	// records are what each network's last successful Sync left, by
	// network ID, for SyncPeers (delta.go).
	records kernel.Records[record]
}

// New returns the backend for the host cfg describes.
func New(cfg overlay.BackendConfig) *Backend { return &Backend{cfg: cfg.WithDefaults()} }

func (*Backend) Name() string  { return Name }
func (*Backend) Overhead() int { return 0 } // no encapsulation

// Options: none besides the MTU.
func (*Backend) Options() overlay.Options { return overlay.Options{} }

// LeaseData is nothing: a peer's public IP, in every lease, is all it needs.
func (*Backend) LeaseData(netip.Prefix) any { return nil }

// DeviceName is "": host-gw routes through the underlay interface.
func (*Backend) DeviceName(overlay.Network) string { return "" }

// Setup only checks the underlay interface exists: host-gw has no device.
func (b *Backend) Setup(_ context.Context, n overlay.Network) error {
	if _, err := kernel.LookupUnderlay(b.cfg.Netlink, b.cfg.Host); err != nil {
		return fmt.Errorf(Name+" %s: %w", n.Pool, err)
	}
	return nil
}

// Sync routes every reachable peer's subnet via its public IP and removes
// felt's other routes into the pool. Unreachable peers are logged and
// returned as errors, and get no route: a route via an address that is not
// one hop away would send the subnet's traffic nowhere. felt's routes are
// dumped once: a route there already is not written again (10,000 writes
// per sync with 10,000 peers), and the stale ones are pruned from that
// listing. A Sync without error records its routes, for SyncPeers.
func (b *Backend) Sync(ctx context.Context, n overlay.Network, peers []lease.Lease) error {
	b.records.Forget(n.ID)
	u, err := kernel.LookupUnderlay(b.cfg.Netlink, b.cfg.Host)
	if err != nil {
		return fmt.Errorf(Name+" %s: %w", n.Pool, err)
	}
	var errs []error
	listed, err := kernel.Owned(b.cfg.Netlink, n.Pool)
	if err != nil { // everything is written, nothing pruned
		errs = append(errs, fmt.Errorf(Name+" %s: %w", n.Pool, err))
	}
	installed := kernel.InstalledOf(listed)
	want := map[kernel.RouteKey]bool{}
	rec := &record{underlay: u.Link.Attrs().Index, routes: make(map[netip.Prefix]netlink.Route, len(peers))}
	for _, p := range peers {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := b.route(n, u, p, installed)
		if r.Dst != nil {
			want[kernel.KeyOf(r)] = true
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rec.routes[p.Subnet] = r
	}
	if listed != nil {
		removed, err := kernel.PruneFrom(b.cfg.Netlink, listed, want)
		if len(removed) > 0 {
			b.cfg.Log.Info("removed stale routes", "network", n.ID, "backend", Name, "subnets", removed)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf(Name+" %s: %w", n.Pool, err))
		}
	}
	if len(errs) == 0 {
		b.records.Remember(n.ID, rec)
	}
	return errors.Join(errs...)
}

// route installs peer p's route, unless installed (felt's routes as
// listed; nil: none known) holds it. It returns the route (Dst nil when p
// gets none: an unreachable peer, logged) and what failed.
func (b *Backend) route(n overlay.Network, u kernel.Underlay, p lease.Lease, installed map[kernel.RouteKey]int) (netlink.Route, error) {
	if err := u.Direct(p.PublicIP); err != nil {
		e := &UnreachablePeerError{HostID: p.HostID, Subnet: p.Subnet, PublicIP: p.PublicIP, Reason: err}
		b.cfg.Log.Error(Name+" cannot reach peer; no route installed", "network", n.ID, "peer", p.HostID,
			"subnet", p.Subnet, "publicIP", p.PublicIP, "underlay", u.Name(), "err", e)
		return netlink.Route{}, e
	}
	r := kernel.PeerRoute(p.Subnet, p.PublicIP, u.Link.Attrs().Index, false)
	if kernel.Has(installed, r) {
		return r, nil
	}
	if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
		return r, fmt.Errorf(Name+" %s: route %s via %s dev %s: %w", n.Pool, p.Subnet, p.PublicIP, u.Name(), err)
	}
	return r, nil
}

// Teardown removes felt's routes into the pool.
func (b *Backend) Teardown(_ context.Context, n overlay.Network) error {
	b.records.Forget(n.ID)
	if _, err := kernel.PruneRoutes(b.cfg.Netlink, n.Pool, nil); err != nil {
		return fmt.Errorf(Name+" %s: %w", n.Pool, err)
	}
	return nil
}
