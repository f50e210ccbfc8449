// Package driver is felt's remote network driver: a Linux bridge per felt
// network holding this host's gateway, a veth pair per endpoint, firewall
// rules that isolate networks, and the overlay that links the bridge to the
// network's subnets on other hosts. Records of networks and endpoints are
// persisted, since Docker replays neither to a remote driver.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	api "github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/state"
)

// Network is this host's record of one felt network.
type Network struct {
	ID            string       `json:"id"`
	Pool          netip.Prefix `json:"pool"`
	Subnet        netip.Prefix `json:"subnet"`
	Gateway       netip.Addr   `json:"gateway"`
	Bridge        string       `json:"bridge"`
	Backend       string       `json:"backend"`
	VNI           int          `json:"vni,omitempty"`
	MTU           int          `json:"mtu"`
	DirectRouting bool         `json:"directRouting,omitempty"`
	Port          int          `json:"port,omitempty"`
	Internal      bool         `json:"internal,omitempty"`
}

// Overlay returns what the overlay backends need of n.
func (n Network) Overlay() overlay.Network {
	return overlay.Network{ID: n.ID, Pool: n.Pool, Subnet: n.Subnet, Bridge: n.Bridge, Backend: n.Backend,
		VNI: n.VNI, MTU: n.MTU, DirectRouting: n.DirectRouting, Port: n.Port}
}

// Endpoint is this host's record of one endpoint.
type Endpoint struct {
	ID        string       `json:"id"`
	NetworkID string       `json:"networkID"`
	Address   netip.Prefix `json:"address"`
	MAC       string       `json:"mac"`
	HostVeth  string       `json:"hostVeth"`
	PeerVeth  string       `json:"peerVeth"`
}

// NetworksPrefix and EndpointsPrefix are where the records live.
var (
	NetworksPrefix  = state.Key("networks") + "/"
	EndpointsPrefix = state.Key("endpoints") + "/"
)

func networkKey(id string) string  { return NetworksPrefix + id }
func endpointKey(id string) string { return EndpointsPrefix + id }

// Overlay links a network's bridge to its subnets on other hosts.
type Overlay interface {
	// Attach starts (idempotently) connecting n to its peers.
	Attach(ctx context.Context, n overlay.Network) error
	// Detach stops and removes n's overlay state on this host.
	Detach(ctx context.Context, n overlay.Network) error
	// Check reports, before creation, why n cannot work with its peers.
	Check(ctx context.Context, n overlay.Network) error
}

// Config holds the driver's dependencies.
type Config struct {
	State    *state.Store
	Registry *lease.Registry
	IPAM     *ipam.Driver
	Netlink  *netlink.Handle
	Firewall *firewall.Firewall
	Overlay  Overlay
	// Backends describe the overlay backends: the options each takes, its
	// overhead, the default one (overlay.Backends).
	Backends *overlay.Backends
	// Instance names this felt (its host ID) in the kernel objects it marks.
	Instance string
	// UnderlayMTU is the MTU of the interface carrying traffic to other hosts.
	UnderlayMTU func() (int, error)
	Log         *slog.Logger
}

// Driver serves the NetworkDriver calls.
type Driver struct {
	cfg Config
	nl  *netlink.Handle
	mu  sync.Mutex
}

// New returns a network driver.
func New(cfg Config) *Driver {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Driver{cfg: cfg, nl: cfg.Netlink}
}

// Capabilities answers GetCapabilities, statically. Scope local: each host's
// Docker keeps its own network object; ConnectivityScope global: containers
// reach other hosts.
func Capabilities() *api.CapabilitiesResponse {
	return &api.CapabilitiesResponse{Scope: api.LocalScope, ConnectivityScope: api.GlobalScope}
}

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
	nets, err := d.networks(ctx)
	if err != nil {
		return err
	}
	if existing, ok, err := d.network(ctx, req.NetworkID); err != nil {
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
	rec, err := d.cfg.Registry.EnsureNetwork(ctx, opts.spec, true)
	if err != nil {
		return err
	}
	mtu := rec.MTU
	if mtu == 0 {
		if mtu, err = d.derivedMTU(rec.Backend); err != nil {
			return err
		}
	}
	n := Network{ID: req.NetworkID, Pool: pool.Pool, Subnet: subnet, Gateway: gw, Bridge: BridgeName(req.NetworkID),
		Backend: rec.Backend, VNI: rec.VNI, MTU: mtu, DirectRouting: rec.DirectRouting, Port: rec.Port, Internal: opts.internal}
	if d.cfg.Overlay != nil {
		if err := d.cfg.Overlay.Check(ctx, n.Overlay()); err != nil {
			return err
		}
	}
	if err := d.ensureNetwork(ctx, n, nets...); err != nil {
		d.removeNetwork(ctx, n, nets)
		return err
	}
	if err := d.cfg.State.Put(ctx, networkKey(n.ID), n); err != nil {
		d.removeNetwork(ctx, n, nets)
		return err
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
func (d *Driver) ensureNetwork(ctx context.Context, n Network, others ...Network) error {
	if err := d.ensureBridge(n); err != nil {
		return err
	}
	if err := d.syncFirewall(ctx, append(others, n)); err != nil {
		return err
	}
	if d.cfg.Overlay != nil {
		if err := d.cfg.Overlay.Attach(ctx, n.Overlay()); err != nil {
			return fmt.Errorf("overlay %s: %w", n.Backend, err)
		}
	}
	return nil
}

func (d *Driver) syncFirewall(ctx context.Context, nets []Network) error {
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
func (d *Driver) removeNetwork(ctx context.Context, n Network, others []Network) {
	if d.cfg.Overlay != nil {
		if err := d.cfg.Overlay.Detach(ctx, n.Overlay()); err != nil {
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
	n, ok, err := d.network(ctx, req.NetworkID)
	if err != nil {
		return err
	}
	if !ok {
		return d.deleteOwnedLink(BridgeName(req.NetworkID), d.aliasNetwork()+req.NetworkID)
	}
	eps, err := state.List[Endpoint](ctx, d.cfg.State, EndpointsPrefix)
	if err != nil {
		return err
	}
	for _, ep := range eps {
		if ep.NetworkID == n.ID {
			d.deleteEndpoint(ctx, ep)
		}
	}
	nets, err := d.networks(ctx)
	if err != nil {
		return err
	}
	var others []Network
	for _, o := range nets {
		if o.ID != n.ID {
			others = append(others, o)
		}
	}
	d.removeNetwork(ctx, n, others)
	if err := d.cfg.State.Delete(ctx, networkKey(n.ID)); err != nil {
		return err
	}
	d.cfg.Log.Info("network deleted", "network", short(n.ID, 12), "bridge", n.Bridge)
	return nil
}

// CreateEndpoint makes the endpoint's veth pair on the network's bridge.
func (d *Driver) CreateEndpoint(ctx context.Context, req *api.CreateEndpointRequest) (*api.CreateEndpointResponse, error) {
	if err := checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID); err != nil {
		return nil, err
	}
	addr, mac, err := parseInterface(req.Interface)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.existingNetwork(ctx, req.NetworkID)
	if err != nil {
		return nil, err
	}
	if err := checkEndpointAddress(n, addr); err != nil {
		return nil, err
	}
	resp := &api.CreateEndpointResponse{}
	var ep Endpoint
	found, err := d.cfg.State.Get(ctx, endpointKey(req.EndpointID), &ep)
	if err != nil {
		return nil, err
	}
	if found {
		// A repeated call: it must describe the same endpoint.
		if ep.NetworkID != n.ID {
			return nil, fmt.Errorf("endpoint %s already exists on network %s, not on network %s", ep.ID, ep.NetworkID, n.ID)
		}
		if ep.Address != addr {
			return nil, fmt.Errorf("endpoint %s already exists with address %s, not %s", ep.ID, ep.Address, addr)
		}
		if mac != "" && mac != ep.MAC {
			return nil, fmt.Errorf("endpoint %s already exists with MAC address %s, not %s", ep.ID, ep.MAC, mac)
		}
	} else {
		host, peer := vethNames(req.EndpointID)
		ep = Endpoint{ID: req.EndpointID, NetworkID: n.ID, Address: addr, MAC: mac, HostVeth: host, PeerVeth: peer}
		if ep.MAC == "" {
			// Docker sent none: return one derived from the address, as
			// Docker's bridge driver does, so it is stable and unique
			// across hosts.
			ep.MAC = macFromIP(addr.Addr()).String()
		}
	}
	if mac == "" {
		resp.Interface = &api.EndpointInterface{MacAddress: ep.MAC}
	}
	if found {
		if owned, err := d.ownsLink(ep.HostVeth, d.aliasEndpoint()+ep.ID); err != nil {
			return nil, err
		} else if owned {
			return resp, nil // it is all there
		}
	}
	if err := d.makeVeth(n, ep); err != nil {
		return nil, err
	}
	if err := d.cfg.State.Put(ctx, endpointKey(ep.ID), ep); err != nil {
		_ = d.deleteOwnedLink(ep.HostVeth, d.aliasEndpoint()+ep.ID)
		return nil, err
	}
	d.cfg.Log.Debug("endpoint created", "endpoint", short(ep.ID, 12), "address", addr, "veth", ep.HostVeth)
	return resp, nil
}

// makeVeth creates ep's pair after clearing its names: a leftover of a
// crashed attempt goes, a link of anything else is a refusal.
func (d *Driver) makeVeth(n Network, ep Endpoint) error {
	if err := d.claimName(ep.HostVeth, d.aliasEndpoint()+ep.ID); err != nil {
		return err
	}
	// The container end of a pair of ours went with its host end: a link of
	// that name now is someone else's.
	if l, err := d.linkByName(ep.PeerVeth); err != nil {
		return err
	} else if l != nil {
		return fmt.Errorf("endpoint %s: a link named %s exists and is not felt's (%s)", ep.ID, ep.PeerVeth, owner(l))
	}
	return d.createVeth(n, ep)
}

func macFromIP(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// DeleteEndpoint removes the veth pair; unknown endpoints are fine (the pair
// of that exact ID goes, if one was left behind).
func (d *Driver) DeleteEndpoint(ctx context.Context, req *api.DeleteEndpointRequest) error {
	if err := checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var ep Endpoint
	found, err := d.cfg.State.Get(ctx, endpointKey(req.EndpointID), &ep)
	if err != nil {
		return err
	}
	if found && ep.NetworkID != req.NetworkID {
		return fmt.Errorf("endpoint %s belongs to network %s, not to network %s", ep.ID, ep.NetworkID, req.NetworkID)
	}
	if !found {
		host, peer := vethNames(req.EndpointID)
		ep = Endpoint{ID: req.EndpointID, HostVeth: host, PeerVeth: peer}
	}
	return d.deleteEndpoint(ctx, ep)
}

// deleteEndpoint removes ep's pair (deleting the host end takes the
// container end with it, wherever it is) and its record.
func (d *Driver) deleteEndpoint(ctx context.Context, ep Endpoint) error {
	if err := d.deleteOwnedLink(ep.HostVeth, d.aliasEndpoint()+ep.ID); err != nil {
		return err
	}
	return d.cfg.State.Delete(ctx, endpointKey(ep.ID))
}

// EndpointInfo has nothing to add to what Docker knows.
func (d *Driver) EndpointInfo(ctx context.Context, req *api.InfoRequest) (*api.InfoResponse, error) {
	if err := checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID); err != nil {
		return nil, err
	}
	return &api.InfoResponse{Value: map[string]string{}}, nil
}

// Join hands Docker the container end of the veth. felt returns no default
// gateway: Docker then attaches the container to docker_gwbridge for NAT and
// -p (or not at all for --internal), while a route sends the whole pool,
// including other hosts' subnets, through the felt bridge.
//
// Join is idempotent: while the host end of the pair exists the pair is
// whole (the kernel deletes both ends together), its container end either
// still in this namespace or already moved into a container, and a repeated
// Join answers the same without touching it; recreating it would cut the
// container off. Only a pair that vanished is made again.
func (d *Driver) Join(ctx context.Context, req *api.JoinRequest) (*api.JoinResponse, error) {
	if err := checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.existingNetwork(ctx, req.NetworkID)
	if err != nil {
		return nil, err
	}
	var ep Endpoint
	found, err := d.cfg.State.Get(ctx, endpointKey(req.EndpointID), &ep)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("endpoint %s does not exist on this host", req.EndpointID)
	}
	if ep.NetworkID != n.ID {
		return nil, fmt.Errorf("endpoint %s belongs to network %s, not to network %s", ep.ID, ep.NetworkID, n.ID)
	}
	owned, err := d.ownsLink(ep.HostVeth, d.aliasEndpoint()+ep.ID)
	if err != nil {
		return nil, err
	}
	if !owned {
		// The pair vanished (someone deleted it): make it again rather
		// than fail the container start.
		if err := d.makeVeth(n, ep); err != nil {
			return nil, err
		}
	}
	resp := &api.JoinResponse{InterfaceName: api.InterfaceName{SrcName: ep.PeerVeth, DstPrefix: "eth"}}
	if n.Pool != n.Subnet {
		resp.StaticRoutes = []*api.StaticRoute{{Destination: n.Pool.String(), RouteType: 0, NextHop: n.Gateway.String()}}
	}
	return resp, nil
}

// Leave has nothing to undo: the veth goes with DeleteEndpoint.
func (d *Driver) Leave(ctx context.Context, req *api.LeaveRequest) error {
	return checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID)
}

// ProgramExternalConnectivity has nothing to do: felt returns no gateway,
// so Docker handles NAT and -p on docker_gwbridge.
func (d *Driver) ProgramExternalConnectivity(ctx context.Context, req *api.ProgramExternalConnectivityRequest) error {
	return checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID)
}

// RevokeExternalConnectivity has nothing to undo, as above.
func (d *Driver) RevokeExternalConnectivity(ctx context.Context, req *api.RevokeExternalConnectivityRequest) error {
	return checkIDs("NetworkID", req.NetworkID, "EndpointID", req.EndpointID)
}

// existingNetwork is network for calls that need the network to exist.
func (d *Driver) existingNetwork(ctx context.Context, id string) (Network, error) {
	n, ok, err := d.network(ctx, id)
	if err == nil && !ok {
		err = fmt.Errorf("network %s is not a felt network on this host", id)
	}
	return n, err
}

func (d *Driver) network(ctx context.Context, id string) (Network, bool, error) {
	var n Network
	ok, err := d.cfg.State.Get(ctx, networkKey(id), &n)
	return n, ok, err
}

// Networks lists this host's felt networks.
func (d *Driver) Networks(ctx context.Context) ([]Network, error) { return d.networks(ctx) }

func (d *Driver) networks(ctx context.Context) ([]Network, error) {
	return state.List[Network](ctx, d.cfg.State, NetworksPrefix)
}

// HasNetworkForPool reports whether a felt network on this host uses pool.
func (d *Driver) HasNetworkForPool(ctx context.Context, pool netip.Prefix) (bool, error) {
	nets, err := d.networks(ctx)
	if err != nil {
		return false, err
	}
	for _, n := range nets {
		if n.Pool == pool {
			return true, nil
		}
	}
	return false, nil
}

func (d *Driver) poolOfSubnet(ctx context.Context, subnet netip.Prefix) (ipam.Pool, error) {
	pools, err := d.cfg.IPAM.Pools(ctx)
	if err != nil {
		return ipam.Pool{}, err
	}
	for _, p := range pools {
		if p.Subnet == subnet {
			return p, nil
		}
	}
	return ipam.Pool{}, fmt.Errorf("subnet %s was not allocated by felt: the felt network driver needs felt's IPAM, create the network with --ipam-driver felt:latest and --subnet", subnet)
}
