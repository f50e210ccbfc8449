package udp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
	"github.com/felt-net/felt/overlay/udp/dataplane"
)

// Sync gives the data path the peers, then routes each peer's subnet
// through the TUN and removes felt's other routes into the pool. Table
// first: a route must not lead packets to a tunnel that does not know
// where to send them.
func (b *Backend) Sync(ctx context.Context, n overlay.Network, peers []lease.Lease) error {
	return b.locked(n, func(n overlay.Network, name string, st *udpNet) error { return b.sync(ctx, n, name, st, peers) })
}

func (b *Backend) sync(ctx context.Context, n overlay.Network, name string, st *udpNet, peers []lease.Lease) error {
	if st == nil || st.tunnel == nil {
		return fmt.Errorf(Name+" %s: no tunnel (Setup must create it first)", name)
	}
	link, err := b.cfg.Netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf(Name+" %s: %w (Setup must create it first)", name, err)
	}
	var errs []error
	table := make([]dataplane.Peer, 0, len(peers))
	for _, p := range peers {
		if err := ctx.Err(); err != nil {
			return err
		}
		table = append(table, dataplane.Peer{Subnet: p.Subnet, Addr: netip.AddrPortFrom(p.PublicIP, uint16(n.Port))})
	}
	if err := st.tunnel.SetPeers(table); err != nil {
		return errors.Join(append(errs, fmt.Errorf(Name+" %s: %w", name, err))...)
	}
	st.peers = table
	want := map[kernel.RouteKey]bool{}
	for _, p := range peers {
		r := tunRoute(p.Subnet, link.Attrs().Index)
		want[kernel.KeyOf(r)] = true
		if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf(Name+" %s: route %s dev %s: %w", name, p.Subnet, name, err))
		}
	}
	removed, err := kernel.PruneRoutes(b.cfg.Netlink, n.Pool, want)
	if len(removed) > 0 {
		b.cfg.Log.Info("removed stale routes", "network", n.ID, "backend", Name, "subnets", removed)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf(Name+" %s: %w", name, err))
	}
	return errors.Join(errs...)
}
