package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// Sync makes the device's WireGuard peers the leases' (peers.go), changing
// only what differs, then routes each peer's subnet through the device and
// removes felt's other routes into the pool. Peers first: a route must not
// lead packets to a device that has no peer for them yet.
func (b *Backend) Sync(ctx context.Context, n overlay.Network, peers []lease.Lease) error {
	return b.locked(n, func(n overlay.Network, name string, st *wgNet) error { return b.sync(ctx, n, name, st, peers) })
}

func (b *Backend) sync(ctx context.Context, n overlay.Network, name string, st *wgNet, leases []lease.Lease) error {
	if st == nil || st.impl == "" {
		return fmt.Errorf(Name+" %s: no device (Setup must create it first)", name)
	}
	link, err := b.cfg.Netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf(Name+" %s: %w (Setup must create it first)", name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	key, err := b.privateKey()
	if err != nil {
		return fmt.Errorf(Name+" %s: %w", n.Pool, err)
	}
	want, routes, skips := wantedPeers(n, key.PublicKey(), leases)
	var errs []error
	b.logSkips(st, n, skips)
	configs := make([]wgtypes.PeerConfig, 0, len(want))
	for _, p := range want {
		configs = append(configs, p.config(true))
	}
	err = b.withClient(func(c *wgctrl.Client) error {
		d, err := c.Device(name)
		if err != nil {
			return fmt.Errorf("read device: %w", err)
		}
		change := diffPeers(d.Peers, want, st.endpoints)
		if len(change) == 0 {
			return nil
		}
		if err := c.ConfigureDevice(name, wgtypes.Config{Peers: change}); err != nil {
			return fmt.Errorf("configure peers: %w", err)
		}
		b.cfg.Log.Debug("wireguard peers changed", "network", n.ID, "device", name, "changes", len(change), "peers", len(want))
		return nil
	})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf(Name+" %s: %w", name, err))...)
	}
	st.peers, st.routes = configs, routes
	// The device now has each wanted peer's lease endpoint, or one it
	// learned since felt set that one.
	st.endpoints = make(map[wgtypes.Key]netip.AddrPort, len(want))
	for _, p := range want {
		st.endpoints[p.Key] = p.Endpoint
	}
	// The pool's blackhole is felt's too (poolBlackhole), and stays.
	wantRoutes := map[kernel.RouteKey]bool{kernel.KeyOf(poolBlackhole(n)): true}
	for _, s := range routes {
		r := devRoute(s, link.Attrs().Index)
		wantRoutes[kernel.KeyOf(r)] = true
		if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf(Name+" %s: route %s dev %s: %w", name, s, name, err))
		}
	}
	removed, err := kernel.PruneRoutes(b.cfg.Netlink, n.Pool, wantRoutes)
	if len(removed) > 0 {
		b.cfg.Log.Info("removed stale routes", "network", n.ID, "backend", Name, "subnets", removed)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf(Name+" %s: %w", name, err))
	}
	return errors.Join(errs...)
}

// logSkips logs each skipped lease once while its cause lasts: Sync runs
// at every lease change and resync.
func (b *Backend) logSkips(st *wgNet, n overlay.Network, skips []skip) {
	now := map[string]bool{}
	for _, s := range skips {
		k := s.HostID + "|" + s.Subnet.String() + "|" + s.Why
		now[k] = true
		if !st.skipped[k] {
			b.cfg.Log.Warn("wireguard: peer skipped: its traffic is dropped", "network", n.ID,
				"host", s.HostID, "subnet", s.Subnet, "why", s.Why)
		}
	}
	st.skipped = now
}

// devRoute is the route of a peer's subnet into the device: no gateway,
// as a WireGuard device has no neighbours; it finds the peer by
// destination among the peers' allowed IPs.
func devRoute(dst netip.Prefix, link int) netlink.Route {
	r := kernel.PeerRoute(dst, netip.Addr{}, link, false)
	r.Scope = netlink.SCOPE_LINK
	return r
}
