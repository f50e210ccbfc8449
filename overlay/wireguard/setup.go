package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// Setup makes n's WireGuard device run with this host's key on n's port:
// created when missing (kernel or user space, impl.go), adopted when a
// kernel device of that name exists (a restart), recreated when it was
// deleted or replaced, or its wireguard-go stopped; otherwise only its
// MTU, address, state, key and port are repaired, keeping its peers and
// their sessions.
func (b *Backend) Setup(_ context.Context, n overlay.Network) error {
	return b.locked(n, func(n overlay.Network, name string, st *wgNet) error {
		// First, so that it is there whatever fails below.
		b.blackholePool(n)
		return b.setup(n, name, st)
	})
}

func (b *Backend) setup(n overlay.Network, name string, st *wgNet) error {
	if other := b.portUser(n); other != "" {
		return fmt.Errorf(Name+" %s: port %d is already used by wireguard network %s on this host: "+
			"each wireguard network needs its own port (-o port=)", n.Pool, n.Port, other)
	}
	if other := b.servedBy(name, n.ID); other != "" {
		// Two networks cannot share a pool; the other one's Teardown is
		// late (a network deleted and recreated with the same pool).
		return fmt.Errorf(Name+" %s: the pool %s is still served by network %s on this host", name, n.Pool, other)
	}
	key, err := b.privateKey()
	if err != nil {
		return fmt.Errorf(Name+" %s: %w", n.Pool, err)
	}
	if st == nil {
		st = &wgNet{skipped: map[string]bool{}}
		b.nets[n.ID] = st
	}
	var link netlink.Link
	fresh := false
	if st.impl != "" {
		var why string
		if why, link = b.stale(st, n, name); why != "" {
			b.cfg.Log.Warn("recreating wireguard device", "network", n.ID, "device", name, "reason", why)
			b.stop(st)
		}
	}
	if st.impl == "" {
		if link, err = b.start(st, n, name, key); err != nil {
			return fmt.Errorf(Name+" %s: %w", name, err)
		}
		fresh = true
	}
	st.n = n
	// Key, port and peers before the device goes up: wireguard-go opens its
	// socket when up, and again at every port change.
	var restore []wgtypes.PeerConfig
	if fresh {
		restore = st.peers
	}
	if err := b.withClient(func(c *wgctrl.Client) error { return configureDevice(c, name, key, n.Port, restore) }); err != nil {
		return fmt.Errorf(Name+" %s: %w", name, err)
	}
	if err := b.configureLink(link, n); err != nil {
		return fmt.Errorf(Name+" %s: %w", name, err)
	}
	if st.user != nil {
		// The TUN's "up" event raises it too; this makes it certain, and
		// reports a port someone else holds.
		if err := st.user.dev.Up(); err != nil {
			return fmt.Errorf(Name+" %s: wireguard-go up (port %d: if another program uses it, give the network another port with -o port=): %w", name, n.Port, err)
		}
		// A bind that failed (the port taken) leaves wireguard-go with
		// port 0, and its next up, from the TUN's events or the line
		// above, binds any port: up is not enough.
		if err := b.withClient(func(c *wgctrl.Client) error { return checkPort(c, name, n.Port) }); err != nil {
			return fmt.Errorf(Name+" %s: %w", name, err)
		}
	}
	if err := b.routePool(link, n); err != nil {
		return fmt.Errorf(Name+" %s: %w", name, err)
	}
	if fresh {
		// A recreated device comes without the routes its predecessor took
		// along: put back the last synced ones.
		for _, s := range st.routes {
			r := devRoute(s, st.ifindex)
			if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
				b.cfg.Log.Warn("wireguard: restoring route", "device", name, "subnet", s, "err", err)
			}
		}
	}
	return nil
}

// portUser returns the ID of another network set up here on n's port, or
// "": one port is one WireGuard device's.
func (b *Backend) portUser(n overlay.Network) string {
	for id, st := range b.nets {
		if id != n.ID && st.impl != "" && st.n.Port == n.Port {
			return id
		}
	}
	return ""
}

// servedBy returns the ID of a network other than id whose device has the
// name, or "".
func (b *Backend) servedBy(name, id string) string {
	for other, st := range b.nets {
		if other != id && st.impl != "" && DeviceName(st.n.Pool) == name {
			return other
		}
	}
	return ""
}

// stale says why st's device cannot serve n, or "" (with its link) when
// it can.
func (b *Backend) stale(st *wgNet, n overlay.Network, name string) (string, netlink.Link) {
	if st.n.Pool != n.Pool {
		return fmt.Sprintf("pool %s, was %s", n.Pool, st.n.Pool), nil
	}
	if st.user != nil {
		if why := st.user.stopped(); why != "" {
			return why, nil
		}
	}
	link, err := b.cfg.Netlink.LinkByName(name)
	switch {
	case nlerr.IsNotFound(err):
		return "the device is gone", nil
	case err != nil:
		return fmt.Sprintf("looking up the device: %v", err), nil
	case link.Attrs().Index != st.ifindex:
		return fmt.Sprintf("the device was replaced (ifindex %d, was %d)", link.Attrs().Index, st.ifindex), nil
	}
	return "", link
}

// start creates (or, for a kernel device left by an earlier run, adopts)
// st's device.
func (b *Backend) start(st *wgNet, n overlay.Network, name string, key wgtypes.Key) (netlink.Link, error) {
	link, err := b.cfg.Netlink.LinkByName(name)
	switch {
	case err == nil && link.Type() == "wireguard" && b.mode != ModeUserspace:
		// Kernel devices outlive felt: adopt it, with its peers and their
		// sessions; Setup and Sync fix the rest.
		b.using(st, n, name, ImplKernel, "adopted")
		st.ifindex = link.Attrs().Index
		return link, nil
	case err == nil:
		// A TUN of a felt that died is gone with it; whatever this is, it
		// is in the way.
		b.cfg.Log.Warn("deleting leftover device", "device", name, "type", link.Type())
		if err := b.cfg.Netlink.LinkDel(link); err != nil && !nlerr.IsNotFound(err) {
			return nil, fmt.Errorf("delete leftover device: %w", err)
		}
	case !nlerr.IsNotFound(err):
		return nil, fmt.Errorf("look up device: %w", err)
	}
	var kerr error
	if b.mode != ModeUserspace {
		kerr = b.addKernelLink(name, n.MTU)
	}
	impl, err := choose(b.mode, kerr)
	if err != nil {
		return nil, err
	}
	if impl == ImplUserspace {
		u, err := startUserspace(b.ns, name, n.MTU, key, n.Port, b.cfg.Log)
		if err != nil {
			return nil, err
		}
		st.user = u
	}
	link, err = b.cfg.Netlink.LinkByName(name)
	if err != nil {
		err = fmt.Errorf("the new device is not visible through the netlink handle (%w): "+
			"the handle is for another network namespace; give the backend a Host implementing NetNSHost", err)
		if st.user != nil {
			st.user.close()
			st.user = nil
		}
		return nil, err
	}
	// No IPv6 link-local address: it would make the kernel send router
	// solicitations and MLD reports into the tunnel, to be dropped.
	if err := b.cfg.Netlink.LinkSetIP6AddrGenMode(link, 1 /* IN6_ADDR_GEN_MODE_NONE */); err != nil {
		b.cfg.Log.Debug("wireguard: no IPv6 address generation mode", "device", name, "err", err)
	}
	why := ""
	if impl == ImplUserspace && kerr != nil {
		why = kerr.Error()
	}
	b.using(st, n, name, impl, why)
	st.ifindex = link.Attrs().Index
	return link, nil
}

// using records st's implementation, and logs it when it changes.
func (b *Backend) using(st *wgNet, n overlay.Network, name, impl, why string) {
	st.impl = impl
	if st.shown == impl {
		return
	}
	st.shown = impl
	log := b.cfg.Log.With("network", n.ID, "device", name, "port", n.Port, "mtu", n.MTU)
	switch {
	case impl == ImplKernel && why != "":
		log.Info("wireguard: using kernel WireGuard", "device state", why)
	case impl == ImplKernel:
		log.Info("wireguard: using kernel WireGuard")
	case b.mode == ModeUserspace:
		log.Info("wireguard: using wireguard-go in user space (FELT_WIREGUARD=userspace)")
	default:
		log.Info("wireguard: kernel module not available, using wireguard-go in user space", "kernel", why)
	}
}

// stop ends st's device: wireguard-go's goes with its TUN, a kernel one
// is deleted (if still marked n's).
func (b *Backend) stop(st *wgNet) {
	if st.user != nil {
		st.user.close()
		st.user = nil
	} else if st.impl == ImplKernel {
		name := DeviceName(st.n.Pool)
		if _, err := overlay.DeleteDevice(b.cfg.Netlink, name, overlay.OwnerAlias(b.cfg.Instance, st.n.ID)); err != nil {
			b.cfg.Log.Warn("wireguard: deleting device", "device", name, "err", err)
		}
	}
	st.impl = ""
}

// configureLink marks the device as n's, sets its MTU, address and state
// (overlay.ConfigureTunnelDevice).
func (b *Backend) configureLink(link netlink.Link, n overlay.Network) error {
	return overlay.ConfigureTunnelDevice(b.cfg.Netlink, link, b.cfg.Instance, n)
}

// routePool routes all of n's pool into the device, below the peers'
// subnets' routes (and this host's subnet's on the bridge): traffic to a
// subnet with no lease yet, or whose lease is gone (its host died), is
// dropped by WireGuard, which has no peer for it, instead of leaving by
// the default route onto the underlay in clear. Not felt's route protocol:
// that one marks peer subnets (PruneRoutes, status drift); this route goes
// with the device.
func (b *Backend) routePool(link netlink.Link, n overlay.Network) error {
	r := devRoute(n.Pool.Masked(), link.Attrs().Index)
	r.Protocol = unix.RTPROT_STATIC
	if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
		return fmt.Errorf("route %s into the device: %w", n.Pool, err)
	}
	return nil
}

// blackholeMetric puts the pool's blackhole route behind the device's
// (metric 0), so that it only counts while the device's is missing.
const blackholeMetric = 0x7fffffff

// poolBlackhole is the route that drops n's pool whenever its device does
// not route it: not set up yet, failing Setup (a user-space device is gone
// with a felt that restarted, its routes with it, and the key file or the
// port is broken now), or deleted until the next reconcile. Without it the
// pool's traffic would follow the default route onto the underlay in
// clear. It stays until Teardown.
//
// It carries felt's route protocol, as felt's other routes do: deleting it
// then matches felt's route only, never an administrator's (static) one
// to the pool, and felt's route cleanup (kernel.PruneRoutes) finds it,
// which is why Sync names it among the routes it wants.
func poolBlackhole(n overlay.Network) netlink.Route {
	return netlink.Route{Dst: kernel.IPNet(n.Pool.Masked()), Type: unix.RTN_BLACKHOLE, Protocol: kernel.RouteProtocol, Priority: blackholeMetric}
}

// legacyBlackhole is poolBlackhole as felt made it before it carried
// felt's protocol: "proto static", at felt's metric. A Teardown after an
// upgrade deletes it; a static route of another metric is not matched.
func legacyBlackhole(n overlay.Network) netlink.Route {
	r := poolBlackhole(n)
	r.Protocol = unix.RTPROT_STATIC
	return r
}

func (b *Backend) blackholePool(n overlay.Network) {
	r := poolBlackhole(n)
	if err := b.cfg.Netlink.RouteReplace(&r); err != nil {
		b.cfg.Log.Warn("wireguard: cannot blackhole the pool for when its device does not work", "pool", n.Pool, "err", err)
	}
}

// configureDevice gives the device key and port where it has others, and
// restore's peers (a recreated device's). Only what differs is sent:
// wireguard-go rebinds its socket whenever it is told a port.
func configureDevice(c *wgctrl.Client, name string, key wgtypes.Key, port int, restore []wgtypes.PeerConfig) error {
	d, err := c.Device(name)
	if err != nil {
		return fmt.Errorf("read device: %w", err)
	}
	var cfg wgtypes.Config
	if d.PrivateKey != key {
		cfg.PrivateKey = &key
	}
	if d.ListenPort != port {
		cfg.ListenPort = &port
	}
	if len(d.Peers) == 0 {
		cfg.Peers = restore
	}
	if cfg.PrivateKey == nil && cfg.ListenPort == nil && len(cfg.Peers) == 0 {
		return nil
	}
	if err := c.ConfigureDevice(name, cfg); err != nil {
		if cfg.ListenPort != nil {
			// wireguard-go reports a taken port only as "errno=-98".
			return fmt.Errorf("configure (port %d: if another program uses it, give the network another port with -o port=): %w", port, err)
		}
		return fmt.Errorf("configure: %w", err)
	}
	return nil
}

// checkPort fails unless the device listens on port.
func checkPort(c *wgctrl.Client, name string, port int) error {
	d, err := c.Device(name)
	if err != nil {
		return fmt.Errorf("read device: %w", err)
	}
	if d.ListenPort != port {
		return fmt.Errorf("wireguard-go could not bind port %d (it listens on %d): if another program uses it, give the network another port with -o port=", port, d.ListenPort)
	}
	return nil
}

// Teardown stops n's device (wireguard-go's, closing its UAPI socket and
// TUN) and deletes any device left by that name, a stale UAPI socket and
// felt's routes into the pool. It works without a prior Setup, e.g. after
// a restart.
func (b *Backend) Teardown(_ context.Context, n overlay.Network) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.nets[n.ID]; st != nil {
		if st.user != nil {
			st.user.close()
			st.user = nil
		}
		delete(b.nets, n.ID)
	}
	if !n.Pool.IsValid() || !n.Pool.Addr().Is4() {
		return nil
	}
	name := DeviceName(n.Pool)
	if b.servedBy(name, n.ID) != "" {
		return nil // the device and routes are another network's
	}
	var errs []error
	others, err := overlay.DeleteDevice(b.cfg.Netlink, name, overlay.OwnerAlias(b.cfg.Instance, n.ID))
	if err != nil {
		errs = append(errs, fmt.Errorf(Name+" %s: %w", name, err))
	}
	if others {
		return errors.Join(errs...) // the pool's device and routes are another network's
	}
	for _, blackhole := range []netlink.Route{poolBlackhole(n), legacyBlackhole(n)} {
		if err := b.cfg.Netlink.RouteDel(&blackhole); err != nil && !nlerr.IsNotFound(err) && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf(Name+" %s: blackhole route (proto %d): %w", n.Pool, blackhole.Protocol, err))
		}
	}
	if err := removeStaleSocket(name); err != nil {
		errs = append(errs, fmt.Errorf(Name+" %s: %w", name, err))
	}
	if _, err := kernel.PruneRoutes(b.cfg.Netlink, n.Pool, nil); err != nil {
		errs = append(errs, fmt.Errorf(Name+" %s: routes: %w", n.Pool, err))
	}
	return errors.Join(errs...)
}

// removeStaleSocket removes the UAPI socket of device name if no one
// answers on it: a felt that died leaves it behind.
func removeStaleSocket(name string) error {
	path := uapiPath(name)
	if _, err := os.Lstat(path); err != nil {
		return nil
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil // a live device's, in another namespace
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove stale uapi socket: %w", err)
	}
	return nil
}
