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
	"github.com/felt-net/felt/overlay/vxlan"
)

// UnreachablePeerError says a peer's public IP is not on a subnet connected
// to the underlay interface, so a direct route via it cannot work.
type UnreachablePeerError struct {
	HostID   string
	Subnet   netip.Prefix
	PublicIP netip.Addr
	Reason   error
}

func (e *UnreachablePeerError) Error() string {
	return fmt.Sprintf("%s: peer %s (subnet %s) at %s is not directly reachable: %v; "+
		"%s routes each host's subnet via that host's public IP, so all hosts must be on one L2 segment "+
		"(one subnet of the underlay interface): use backend=%s (with directrouting=true to keep direct routes where possible)",
		Name, e.HostID, e.Subnet, e.PublicIP, e.Reason, Name, vxlan.Name)
}

func (e *UnreachablePeerError) Unwrap() error { return e.Reason }

// Check refuses n when a peer already holding a lease of its pool is not on
// this host's L2 segment: host-gw could not route to it.
func (b *Backend) Check(ctx context.Context, _ overlay.Network, peers func(context.Context) ([]lease.Lease, error)) error {
	ps, err := peers(ctx)
	if err != nil {
		return err
	}
	return reachable(b.cfg.Host, b.cfg.Netlink, ps)
}

// reachable returns an error naming every peer host-gw could not route to
// from this host (nil when all are on the underlay's segment).
func reachable(host overlay.Host, nl *netlink.Handle, peers []lease.Lease) error {
	if nl == nil {
		nl = &netlink.Handle{}
	}
	u, err := kernel.LookupUnderlay(nl, host)
	if err != nil {
		return fmt.Errorf(Name+": %w", err)
	}
	var errs []error
	for _, p := range peers {
		if err := u.Direct(p.PublicIP); err != nil {
			errs = append(errs, &UnreachablePeerError{HostID: p.HostID, Subnet: p.Subnet, PublicIP: p.PublicIP, Reason: err})
		}
	}
	return errors.Join(errs...)
}
