// Package udp is the "udp" backend, flannel's first design made fast: per
// network a TUN device (DeviceName, tun.go) holding this host's subnet's
// .0/32, with a route per peer subnet through it (sync.go), and a
// userspace data path (package overlay/udp/dataplane) carrying each IP
// packet as one UDP datagram to the peer's public IP and n.Port. It works
// across routed underlays and needs no kernel module, at the cost of
// copies through user space.
//
// Networks on the same port share one socket, demultiplexed by the inner
// destination (pools never overlap), so every network can keep the default
// port 8285.
package udp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
	"github.com/felt-net/felt/overlay/udp/dataplane"
)

// Name selects the backend: -o backend=udp.
const Name = "udp"

// DefaultPort is the UDP port of a network created without -o port.
const DefaultPort = 8285

// Backend is the udp backend of one host.
type Backend struct {
	cfg   overlay.BackendConfig
	ports *dataplane.Ports

	mu   sync.Mutex
	nets map[string]*udpNet // by network ID
}

// udpNet is what the backend keeps for one network between calls.
type udpNet struct {
	n       overlay.Network // as last set up (with the port and MTU defaulted)
	tunnel  *dataplane.Tunnel
	ifindex int              // of the tunnel's TUN when it was created
	peers   []dataplane.Peer // as last synced, restored into a recreated tunnel
	ctr     *dataplane.Counters
}

// New returns the backend for the host cfg describes. A Host implementing
// overlay.NetNSHost has its TUN devices and sockets opened in its namespace.
func New(cfg overlay.BackendConfig) *Backend {
	cfg = cfg.WithDefaults()
	ns := netns.None()
	if h, ok := cfg.Host.(overlay.NetNSHost); ok {
		ns = h.NetNS()
	}
	return &Backend{cfg: cfg, ports: dataplane.NewPorts(ns, cfg.Log), nets: map[string]*udpNet{}}
}

func (*Backend) Name() string { return Name }

// Overhead is outer IP 20 + UDP 8.
func (*Backend) Overhead() int { return 28 }

// Options: a port, DefaultPort when not given.
func (*Backend) Options() overlay.Options { return overlay.Options{DefaultPort: DefaultPort} }

// LeaseData is nothing: peers send to the public IP in every lease, on the
// network's port, which is in the shared network record.
func (*Backend) LeaseData(netip.Prefix) any { return nil }

// DeviceName is n's TUN device's (DeviceName), for a valid pool.
func (*Backend) DeviceName(n overlay.Network) string {
	if n.Pool.IsValid() && n.Pool.Addr().Is4() {
		return DeviceName(n.Pool)
	}
	return ""
}

// Check has nothing to refuse: udp reaches any peer the underlay routes to.
func (*Backend) Check(context.Context, overlay.Network, func(context.Context) ([]lease.Lease, error)) error {
	return nil
}

// StatsReporter is implemented by the udp backend: the traffic counters
// of a network it has set up (ok false otherwise).
type StatsReporter interface {
	Stats(n overlay.Network) (stats dataplane.Stats, ok bool)
}

// Setup makes n's TUN device and data path run: created when missing,
// recreated when the device was deleted or replaced, its data path
// stopped, or the network's pool, subnet, port or MTU changed; otherwise
// only the device's MTU, address and state are repaired.
func (b *Backend) Setup(_ context.Context, n overlay.Network) error {
	return b.locked(n, b.setup)
}

// locked completes n (complete) and calls f with it, its device name and
// what the backend keeps for it (nil if nothing yet), under the backend's
// lock.
func (b *Backend) locked(n overlay.Network, f func(n overlay.Network, name string, st *udpNet) error) error {
	n, name, err := b.complete(n)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return f(n, name, b.nets[n.ID])
}

func (b *Backend) setup(n overlay.Network, name string, st *udpNet) error {
	if st != nil && st.tunnel != nil {
		why, link := b.stale(st, n, name)
		if why == "" {
			if err := b.configureTUN(link, n); err != nil {
				return fmt.Errorf(Name+" %s: %w", name, err)
			}
			return nil
		}
		b.cfg.Log.Warn("recreating udp tunnel", "network", n.ID, "device", name, "reason", why)
		if err := st.stop(); err != nil {
			b.cfg.Log.Warn("stopping udp tunnel", "network", n.ID, "err", err)
		}
	}
	if other := b.servedBy(name, n.ID); other != "" {
		// Two networks cannot share a pool; the other one's Teardown is
		// late (a network deleted and recreated with the same pool).
		return fmt.Errorf(Name+" %s: the pool %s is still served by network %s on this host", name, n.Pool, other)
	}
	if st == nil {
		st = &udpNet{ctr: &dataplane.Counters{}}
		b.nets[n.ID] = st
	}
	st.n = n
	return b.start(st, name)
}

// complete checks n and fills in the defaults the driver normally has; it
// returns n's device name too.
func (b *Backend) complete(n overlay.Network) (overlay.Network, string, error) {
	n, err := overlay.CompleteTunnel(Name, n, DefaultPort, b.Overhead(), b.cfg.Host)
	if err != nil {
		return n, "", err
	}
	return n, DeviceName(n.Pool), nil
}

// stale says why st's running tunnel cannot serve n, or "" (with its
// device) when it can.
func (b *Backend) stale(st *udpNet, n overlay.Network, name string) (string, netlink.Link) {
	select {
	case <-st.tunnel.Done():
		return "the data path stopped (TUN device deleted?)", nil
	default:
	}
	switch old := st.n; {
	case old.Pool != n.Pool || old.Subnet != n.Subnet:
		return fmt.Sprintf("subnet %s of %s, was %s of %s", n.Subnet, n.Pool, old.Subnet, old.Pool), nil
	case old.Port != n.Port:
		return fmt.Sprintf("port %d, was %d", n.Port, old.Port), nil
	case old.MTU != n.MTU:
		return fmt.Sprintf("MTU %d, was %d", n.MTU, old.MTU), nil
	}
	link, err := b.cfg.Netlink.LinkByName(name)
	switch {
	case nlerr.IsNotFound(err):
		return "the TUN device is gone", nil
	case err != nil:
		return fmt.Sprintf("looking up the TUN device: %v", err), nil
	case link.Attrs().Index != st.ifindex:
		return fmt.Sprintf("the TUN device was replaced (ifindex %d, was %d)", link.Attrs().Index, st.ifindex), nil
	}
	return "", link
}

// start creates st's tunnel and device. A device of that name that is not
// a running tunnel's is a leftover (felt's TUNs are not persistent, so
// rather someone's copy) and is deleted first: creating would attach to it.
func (b *Backend) start(st *udpNet, name string) error {
	n := st.n
	if link, err := b.cfg.Netlink.LinkByName(name); err == nil {
		b.cfg.Log.Warn("deleting leftover device", "device", name, "type", link.Type())
		if err := b.cfg.Netlink.LinkDel(link); err != nil && !nlerr.IsNotFound(err) {
			return fmt.Errorf(Name+" %s: delete leftover device: %w", name, err)
		}
	}
	t, err := b.ports.Start(dataplane.Config{Name: name, Port: n.Port, Pool: n.Pool, Subnet: n.Subnet.Masked(), MTU: n.MTU, Counters: st.ctr})
	if err != nil {
		return fmt.Errorf(Name+" %s: %w", n.Pool, err)
	}
	link, err := b.cfg.Netlink.LinkByName(name)
	if err != nil {
		err = fmt.Errorf(Name+" %s: the new TUN device is not visible through the netlink handle (%w): "+
			"the handle is for another network namespace; give the backend a Host implementing NetNSHost", name, err)
		return errors.Join(err, t.Stop())
	}
	// No IPv6 link-local address: it would make the kernel send router
	// solicitations and MLD reports into the tunnel, to be dropped.
	if err := b.cfg.Netlink.LinkSetIP6AddrGenMode(link, 1 /* IN6_ADDR_GEN_MODE_NONE */); err != nil {
		b.cfg.Log.Debug("udp tunnel: no IPv6 address generation mode", "device", name, "err", err)
	}
	if err := b.configureTUN(link, n); err != nil {
		return errors.Join(fmt.Errorf(Name+" %s: %w", name, err), t.Stop())
	}
	if err := t.SetPeers(st.peers); err != nil {
		return errors.Join(fmt.Errorf(Name+" %s: %w", name, err), t.Stop())
	}
	st.tunnel, st.ifindex = t, link.Attrs().Index
	// A recreated device comes without the routes its predecessor took
	// along: put back the last synced ones, so traffic flows before the
	// next Sync.
	for _, p := range st.peers {
		r := tunRoute(p.Subnet, st.ifindex)
		if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
			b.cfg.Log.Warn("udp tunnel: restoring route", "device", name, "subnet", p.Subnet, "err", err)
		}
	}
	tunOff, gso, gro := t.Offloads()
	b.cfg.Log.Info("udp tunnel up", "network", n.ID, "device", name, "port", n.Port, "mtu", n.MTU,
		"tunOffload", tunOff, "gso", gso, "gro", gro)
	return nil
}

// stop ends st's tunnel, if any; its device goes with it.
func (st *udpNet) stop() error {
	if st.tunnel == nil {
		return nil
	}
	err := st.tunnel.Stop()
	st.tunnel = nil
	return err
}

// Teardown stops n's tunnel (closing the port's socket if no other network
// uses it), which removes its TUN device and the routes through it, then
// deletes any device left by that name and felt's other routes into the
// pool. It works without a prior Setup, e.g. after a restart.
func (b *Backend) Teardown(_ context.Context, n overlay.Network) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	if st := b.nets[n.ID]; st != nil {
		if err := st.stop(); err != nil {
			errs = append(errs, err)
		}
		delete(b.nets, n.ID)
	}
	if !n.Pool.IsValid() || !n.Pool.Addr().Is4() {
		return errors.Join(errs...)
	}
	name := DeviceName(n.Pool)
	if b.servedBy(name, n.ID) != "" {
		return errors.Join(errs...) // the device and routes are another network's
	}
	others, err := overlay.DeleteDevice(b.cfg.Netlink, name, overlay.OwnerAlias(b.cfg.Instance, n.ID))
	if err != nil {
		errs = append(errs, fmt.Errorf(Name+" %s: %w", name, err))
	}
	if others {
		return errors.Join(errs...) // the pool's device and routes are another network's
	}
	if _, err := kernel.PruneRoutes(b.cfg.Netlink, n.Pool, nil); err != nil {
		errs = append(errs, fmt.Errorf(Name+" %s: routes: %w", n.Pool, err))
	}
	return errors.Join(errs...)
}

// servedBy returns the ID of a network other than id whose running tunnel
// has the device name, or "".
func (b *Backend) servedBy(name, id string) string {
	for other, st := range b.nets {
		if other != id && st.tunnel != nil && DeviceName(st.n.Pool) == name {
			return other
		}
	}
	return ""
}

// Stats returns the counters of n's tunnel (they survive its recreation).
func (b *Backend) Stats(n overlay.Network) (dataplane.Stats, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.nets[n.ID]
	if st == nil || st.tunnel == nil {
		return dataplane.Stats{}, false
	}
	return st.tunnel.Stats(), true
}
