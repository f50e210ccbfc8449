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

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// Name selects the backend: -o backend=host-gw.
const Name = "host-gw"

// Backend is the host-gw backend of one host.
type Backend struct {
	cfg overlay.BackendConfig
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
// one hop away would send the subnet's traffic nowhere.
func (b *Backend) Sync(ctx context.Context, n overlay.Network, peers []lease.Lease) error {
	u, err := kernel.LookupUnderlay(b.cfg.Netlink, b.cfg.Host)
	if err != nil {
		return fmt.Errorf(Name+" %s: %w", n.Pool, err)
	}
	want := map[kernel.RouteKey]bool{}
	var errs []error
	for _, p := range peers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := overlay.CheckPeer(n, p); err != nil {
			errs = append(errs, fmt.Errorf(Name+" %s: %w", n.Pool, err))
			continue
		}
		if err := u.Direct(p.PublicIP); err != nil {
			e := &UnreachablePeerError{HostID: p.HostID, Subnet: p.Subnet, PublicIP: p.PublicIP, Reason: err}
			b.cfg.Log.Error(Name+" cannot reach peer; no route installed", "network", n.ID, "peer", p.HostID,
				"subnet", p.Subnet, "publicIP", p.PublicIP, "underlay", u.Name(), "err", e)
			errs = append(errs, e)
			continue
		}
		r := kernel.PeerRoute(p.Subnet, p.PublicIP, u.Link.Attrs().Index, false)
		want[kernel.KeyOf(r)] = true
		if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf(Name+" %s: route %s via %s dev %s: %w", n.Pool, p.Subnet, p.PublicIP, u.Name(), err))
		}
	}
	removed, err := kernel.PruneRoutes(b.cfg.Netlink, n.Pool, want)
	if len(removed) > 0 {
		b.cfg.Log.Info("removed stale routes", "network", n.ID, "backend", Name, "subnets", removed)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf(Name+" %s: %w", n.Pool, err))
	}
	return errors.Join(errs...)
}

// Teardown removes felt's routes into the pool.
func (b *Backend) Teardown(_ context.Context, n overlay.Network) error {
	if _, err := kernel.PruneRoutes(b.cfg.Netlink, n.Pool, nil); err != nil {
		return fmt.Errorf(Name+" %s: %w", n.Pool, err)
	}
	return nil
}
