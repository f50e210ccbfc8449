package driver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	api "github.com/docker/go-plugins-helpers/network"

	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/state"
)

// CreateNetwork creates the bridge of a felt network, after IPAM leased its
// subnet. On any error nothing is left behind.
func (d *Driver) CreateNetwork(ctx context.Context, req *api.CreateNetworkRequest) error {
	if err := checkID("NetworkID", req.NetworkID); err != nil {
		return err
	}
	opts, err := parseOptions(req.Options, d.cfg.Backends)
	if err != nil {
		return err
	}
	if opts.scope == scopeCluster && d.cfg.Cluster == nil {
		return fmt.Errorf("option %s=%s: cluster networks need a Consul store (CONSUL_HTTP_ADDR) and Docker API access (FELT_DOCKER_HOST not off); drop the option to create a network of this host only", optScope, scopeCluster)
	}
	if len(req.IPv6Data) > 0 {
		return errors.New("felt supports IPv4 only: create the network without --ipv6")
	}
	if len(req.IPv4Data) != 1 {
		return fmt.Errorf("felt needs exactly one --subnet, got %d", len(req.IPv4Data))
	}
	subnet, gw, err := parseIPAMData(req.IPv4Data[0])
	if err != nil {
		return err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	nets, err := d.cfg.State.Networks(ctx)
	if err != nil {
		return err
	}
	if existing, ok, err := d.cfg.State.Network(ctx, req.NetworkID); err != nil {
		return err
	} else if ok {
		if existing.Subnet != subnet || existing.Gateway != gw {
			return fmt.Errorf("network %s already exists with subnet %s and gateway %s, not %s and %s",
				existing.ID, existing.Subnet, existing.Gateway, subnet, gw)
		}
		// A repeated call: just make sure it is all there. With every
		// network: the firewall is synced to exactly the list it gets.
		return d.ensureNetwork(ctx, existing, nets...)
	}
	pool, err := d.poolOfSubnet(ctx, subnet)
	if err != nil {
		return err
	}
	for _, other := range nets {
		if other.Pool == pool.Pool {
			return fmt.Errorf("pool %s is already used by felt network %.12s on this host: one Docker network per pool", pool.Pool, other.ID)
		}
	}
	// Before anything is written: the bridge's name must be free or ours.
	if err := d.checkBridgeName(BridgeName(req.NetworkID), req.NetworkID, netip.PrefixFrom(gw, subnet.Bits())); err != nil {
		return err
	}
	opts.spec.Pool = pool.Pool
	opts.spec.SubnetLen = pool.Subnet.Bits()
	rec, err := d.cfg.Registry.SettleNetwork(ctx, opts.spec)
	if err != nil {
		return err
	}
	mtu := rec.MTU
	if mtu == 0 {
		if mtu, err = d.derivedMTU(rec.Backend); err != nil {
			return err
		}
	}
	n := state.Network{ID: req.NetworkID, Pool: pool.Pool, Subnet: subnet, Gateway: gw, Bridge: BridgeName(req.NetworkID),
		Backend: rec.Backend, VNI: rec.VNI, MTU: mtu, DirectRouting: rec.DirectRouting, Port: rec.Port, Internal: opts.internal}
	if d.cfg.Overlay != nil {
		if err := d.cfg.Overlay.Check(ctx, overlayNetwork(n)); err != nil {
			return err
		}
	}
	if err := d.ensureNetwork(ctx, n, nets...); err != nil {
		d.removeNetwork(ctx, n, nets)
		return err
	}
	if err := d.cfg.State.PutNetwork(ctx, n); err != nil {
		d.removeNetwork(ctx, n, nets)
		return err
	}
	if d.cfg.Cluster != nil {
		d.cfg.Cluster.Created(n.ID)
	}
	d.cfg.Log.Info("network created", "network", short(n.ID, 12), "pool", n.Pool, "subnet", n.Subnet,
		"bridge", n.Bridge, "backend", n.Backend, "vni", n.VNI, "mtu", n.MTU, "internal", n.Internal)
	return nil
}

// derivedMTU is the underlay's MTU minus the backend's encapsulation.
func (d *Driver) derivedMTU(backend string) (int, error) {
	under := 1500
	if d.cfg.UnderlayMTU != nil {
		m, err := d.cfg.UnderlayMTU()
		if err != nil {
			return 0, fmt.Errorf("underlay MTU: %w (set FELT_IFACE, or pass -o %s=N)", err, optMTU)
		}
		under = m
	}
	overhead, err := d.cfg.Backends.Overhead(backend)
	if err != nil {
		return 0, err
	}
	return under - overhead, nil
}

// ensureNetwork makes the kernel state of n exist: bridge, firewall, overlay.
// others are the other networks, whose firewall rules must be kept.
func (d *Driver) ensureNetwork(ctx context.Context, n state.Network, others ...state.Network) error {
	if err := d.ensureBridge(n); err != nil {
		return err
	}
	if err := d.syncFirewall(ctx, append(others, n)); err != nil {
		return err
	}
	if d.cfg.Overlay != nil {
		if err := d.cfg.Overlay.Attach(ctx, overlayNetwork(n)); err != nil {
			return fmt.Errorf("overlay %s: %w", n.Backend, err)
		}
	}
	return nil
}

func (d *Driver) syncFirewall(ctx context.Context, nets []state.Network) error {
	if d.cfg.Firewall == nil {
		return nil
	}
	fw := make([]firewall.Network, 0, len(nets))
	seen := map[string]bool{}
	for _, n := range nets {
		if seen[n.ID] {
			continue
		}
		seen[n.ID] = true
		f := firewall.Network{Bridge: n.Bridge, Pool: n.Pool}
		if err := f.Check(); err != nil {
			// Sync refuses its whole list for one bad entry, which
			// would cost every network its rules. felt never names a
			// bridge outside what Check allows (BridgeName of a checked
			// ID), so this record is old or tampered state, not a
			// bridge of felt's: it gets no rules, the others keep theirs.
			d.cfg.Log.Error("firewall: skipping a stored network it cannot write rules for", "network", short(n.ID, 12), "err", err)
			continue
		}
		fw = append(fw, f)
	}
	return d.cfg.Firewall.Sync(fw)
}

// removeNetwork undoes ensureNetwork; others are the networks that stay.
func (d *Driver) removeNetwork(ctx context.Context, n state.Network, others []state.Network) {
	if d.cfg.Overlay != nil {
		if err := d.cfg.Overlay.Detach(ctx, overlayNetwork(n)); err != nil {
			d.cfg.Log.Warn("overlay detach failed", "network", short(n.ID, 12), "err", err)
		}
	}
	if err := d.syncFirewall(ctx, others); err != nil {
		d.cfg.Log.Warn("firewall cleanup failed", "network", short(n.ID, 12), "err", err)
	}
	if err := d.deleteOwnedLink(n.Bridge, d.aliasNetwork()+n.ID); err != nil {
		d.cfg.Log.Warn("bridge removal failed", "bridge", n.Bridge, "err", err)
	}
}

// DeleteNetwork removes a network; an unknown ID succeeds (Docker would
// otherwise leave the network half-deleted), removing the bridge of that
// exact ID if one was left behind.
func (d *Driver) DeleteNetwork(ctx context.Context, req *api.DeleteNetworkRequest) error {
	if err := checkID("NetworkID", req.NetworkID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok, err := d.cfg.State.Network(ctx, req.NetworkID)
	if err != nil {
		return err
	}
	if !ok {
		return d.deleteOwnedLink(BridgeName(req.NetworkID), d.aliasNetwork()+req.NetworkID)
	}
	if d.cfg.Cluster != nil {
		// First: if this fails, nothing is removed and Docker keeps
		// the network, rather than the cluster making it again.
		if err := d.cfg.Cluster.Deleted(ctx, n.ID, n.Pool); err != nil {
			return err
		}
	}
	eps, err := d.cfg.State.Endpoints(ctx)
	if err != nil {
		return err
	}
	for _, ep := range eps {
		if ep.NetworkID == n.ID {
			// Carrying on: Recover removes what is left of it.
			if err := d.deleteEndpoint(ctx, ep); err != nil {
				d.cfg.Log.Warn("endpoint removal failed", "network", short(n.ID, 12), "endpoint", short(ep.ID, 12), "err", err)
			}
		}
	}
	nets, err := d.cfg.State.Networks(ctx)
	if err != nil {
		return err
	}
	var others []state.Network
	for _, o := range nets {
		if o.ID != n.ID {
			others = append(others, o)
		}
	}
	d.removeNetwork(ctx, n, others)
	if err := d.cfg.State.DeleteNetwork(ctx, n.ID); err != nil {
		return err
	}
	d.cfg.Log.Info("network deleted", "network", short(n.ID, 12), "bridge", n.Bridge)
	return nil
}

// existingNetwork reads the record of network id, for calls that need the
// network to exist.
func (d *Driver) existingNetwork(ctx context.Context, id string) (state.Network, error) {
	n, ok, err := d.cfg.State.Network(ctx, id)
	if err == nil && !ok {
		err = fmt.Errorf("network %s is not a felt network on this host", id)
	}
	return n, err
}

// poolOfSubnet finds the pool felt's IPAM leased subnet from: Docker hands
// CreateNetwork the subnet only.
func (d *Driver) poolOfSubnet(ctx context.Context, subnet netip.Prefix) (state.Pool, error) {
	p, ok, err := d.cfg.State.PoolOfSubnet(ctx, subnet)
	if err == nil && !ok {
		err = fmt.Errorf("subnet %s was not allocated by felt: the felt network driver needs felt's IPAM, create the network with --ipam-driver felt:latest and --subnet", subnet)
	}
	return p, err
}
