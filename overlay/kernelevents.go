package overlay

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// The kernel deletes felt's entries by itself: every route through the
// underlay interface when it goes down or loses its address (a DHCP
// renewal), host-gw's routes and vxlan's direct routes among them; every
// neighbour, FDB entry and route of a VTEP someone deletes. The Manager
// follows link, address and route events in the host's namespace and
// reconciles as soon as they settle, rather than at the next resync.
//
// Only events that can cost felt something count: any change of the
// underlay interface or of felt's own overlay devices, any IPv4 address
// change, and the deletion of a route carrying felt's protocol. A
// reconcile makes such events itself (a pruned route, a new VTEP), which
// cause one more reconcile that finds nothing to do: no loop.

const (
	// kernelSettle is how long a burst of events (a link going down takes
	// its addresses and routes along) may run on before the one reconcile
	// that follows it; also the least time between two such reconciles.
	kernelSettle = 200 * time.Millisecond
	// kernelResubscribe is the pause before subscribing again after a
	// subscription failed (the socket overran, say): events may have been
	// missed, so a reconcile follows the new subscription.
	kernelResubscribe = time.Second
	// kernelRcvBuf asks for a socket buffer that holds the burst of route
	// events a reconcile of many peers makes (the kernel caps it at
	// net.core.rmem_max); an overrun ends the subscription, which is then
	// renewed as above.
	kernelRcvBuf = 1 << 20
)

// Each event that counts concerns one network or every network. One that
// concerns a network (its device, an address on its device or bridge, a
// deleted route of felt's into its pool) marks that network alone; one that
// concerns the underlay, a new default route, or an address on an
// interface that is neither felt's nor gone marks every network; one that
// concerns a network not attached (its teardown deleting its device and
// routes, a stray) marks nothing. So a Detach, or a Sync's own route
// changes, reconcile no other network.

// kernelTarget is what one event concerns: every network, or one.
type kernelTarget struct {
	all     bool
	network string
}

// kernelMarks gathers the targets of a burst of events.
type kernelMarks struct {
	mu   sync.Mutex
	all  bool
	nets map[string]bool
}

func (k *kernelMarks) add(t kernelTarget) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if t.all {
		k.all = true
		return
	}
	if k.nets == nil {
		k.nets = map[string]bool{}
	}
	k.nets[t.network] = true
}

func (k *kernelMarks) take() (all bool, nets map[string]bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	all, nets = k.all, k.nets
	k.all, k.nets = false, nil
	return all, nets
}

// watchKernel turns relevant kernel events into reconciles until ctx ends;
// it returns once its subscriptions are closed.
func (m *Manager) watchKernel(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	poke := make(chan struct{}, 1)
	var marks kernelMarks
	notify := func(t kernelTarget) {
		marks.add(t)
		select {
		case poke <- struct{}{}:
		default:
		}
	}
	var ns *netns.NsHandle
	if h, ok := m.cfg.Underlay.(NetNSHost); ok {
		handle := h.NetNS()
		ns = &handle
	}
	onErr := func(err error) { m.cfg.Log.Debug("kernel event subscription", "err", err) }
	wg.Go(func() {
		follow(ctx, m, "link", func(ch chan netlink.LinkUpdate, done chan struct{}) error {
			return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{Namespace: ns, ErrorCallback: onErr, ReceiveBufferSize: kernelRcvBuf})
		}, m.linkTarget(), notify)
	})
	wg.Go(func() {
		follow(ctx, m, "address", func(ch chan netlink.AddrUpdate, done chan struct{}) error {
			return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: ns, ErrorCallback: onErr, ReceiveBufferSize: kernelRcvBuf})
		}, m.addrTarget, notify)
	})
	wg.Go(func() {
		follow(ctx, m, "route", func(ch chan netlink.RouteUpdate, done chan struct{}) error {
			return netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: ns, ErrorCallback: onErr, ReceiveBufferSize: kernelRcvBuf})
		}, m.routeTarget, notify)
	})
	for {
		select {
		case <-ctx.Done():
			return
		case <-poke:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(kernelSettle):
		}
		select { // events of the burst are seen by the reconcile that follows
		case <-poke:
		default:
		}
		all, nets := marks.take()
		if all {
			m.cfg.Log.Debug("kernel change; reconciling every network")
			m.Kick()
			continue
		}
		m.cfg.Log.Debug("kernel change; reconciling the networks concerned", "networks", len(nets))
		m.markNetworks(nets)
		m.poke()
	}
}

// follow keeps one kernel subscription going until ctx ends, calling
// notify with the target of every update that matters.
func follow[T any](ctx context.Context, m *Manager, what string, subscribe func(chan T, chan struct{}) error, target func(T) (kernelTarget, bool), notify func(kernelTarget)) {
	for first := true; ctx.Err() == nil; first = false {
		ch := make(chan T, 64)
		done := make(chan struct{})
		if err := subscribe(ch, done); err != nil {
			close(done)
			m.cfg.Log.Warn("cannot follow kernel events; retrying", "events", what, "err", err)
		} else {
			if !first {
				notify(kernelTarget{all: true}) // what happened while unsubscribed is unknown
			}
			receive(ctx, ch, target, notify)
			close(done)
			for range ch { // the library closes ch once its socket is closed
			}
			if ctx.Err() != nil {
				return
			}
			m.cfg.Log.Warn("kernel event subscription ended; subscribing again", "events", what)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(kernelResubscribe):
		}
	}
}

// receive passes updates on until ctx ends or ch closes.
func receive[T any](ctx context.Context, ch chan T, target func(T) (kernelTarget, bool), notify func(kernelTarget)) {
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-ch:
			if !ok {
				return
			}
			if t, ok := target(u); ok {
				notify(t)
			}
		}
	}
}

// linkTarget returns what says which link updates matter and whom: any
// change of felt's own overlay devices (deleted, set down) concerns their
// network, found by the owner mark, or by name for a device that lost it;
// a change of the underlay interface (down and up flushes its routes)
// every network. The underlay's name is the last one found: one found by
// the default route cannot be found while the link is down, since the
// default route went with it.
//
// The kernel also announces the underlay when nothing of its own changed:
// a VTEP on it deleted (every Detach of a vxlan network) makes an update
// of it with the same flags. So an update of the underlay counts when it
// deletes the link or changes its flags, operational state, MTU or index
// since the last one seen (at first, since the link as read at start).
func (m *Manager) linkTarget() func(netlink.LinkUpdate) (kernelTarget, bool) {
	var underlay string
	var last underlayState
	seen := false
	if m.cfg.Underlay != nil {
		if name, err := m.cfg.Underlay.Name(); err == nil {
			underlay = name
			if l, err := m.nl.LinkByName(name); err == nil {
				last, seen = underlayStateOf(l.Attrs()), true
			}
		}
	}
	return func(u netlink.LinkUpdate) (kernelTarget, bool) {
		if u.Link == nil {
			return kernelTarget{}, false
		}
		a := u.Link.Attrs()
		if id, ok := strings.CutPrefix(a.Alias, ownerPrefix(m.instance)); ok {
			return kernelTarget{network: id}, true
		}
		if id := m.networkOfDevice(a.Name); id != "" {
			return kernelTarget{network: id}, true
		}
		if m.cfg.Underlay == nil {
			return kernelTarget{}, false
		}
		if name, err := m.cfg.Underlay.Name(); err == nil {
			underlay = name
		}
		if a.Name != underlay {
			return kernelTarget{}, false
		}
		st := underlayStateOf(a)
		if u.Header.Type != unix.RTM_DELLINK && seen && st == last {
			return kernelTarget{}, false
		}
		last, seen = st, true
		return kernelTarget{all: true}, true
	}
}

// underlayState is what of the underlay link a reconcile depends on.
type underlayState struct {
	flags uint32
	oper  netlink.LinkOperState
	mtu   int
	index int
}

func underlayStateOf(a *netlink.LinkAttrs) underlayState {
	return underlayState{flags: a.RawFlags, oper: a.OperState, mtu: a.MTU, index: a.Index}
}

// networkOfDevice is the attached network whose overlay device is called
// name, or "".
func (m *Manager) networkOfDevice(name string) string {
	if name == "" {
		return ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, a := range m.networks {
		if a.device == name {
			return id
		}
	}
	return ""
}

// addrTarget: any IPv4 address change. Removing the underlay's address
// takes the routes via its subnet along; adding it back makes them
// possible again. An address on felt's overlay device or bridge (the
// bridge's alias, felt:<instance>:net:<ID>, as the driver marks it)
// concerns that network; an address on an interface already gone nothing
// (the link's own event says what matters); any other, every network,
// since it may be the underlay's, found by its address. Address changes
// are rare elsewhere; felt's bridges get theirs at each CreateNetwork,
// which is why they are told apart.
func (m *Manager) addrTarget(u netlink.AddrUpdate) (kernelTarget, bool) {
	if u.LinkAddress.IP.To4() == nil {
		return kernelTarget{}, false
	}
	link, err := m.nl.LinkByIndex(u.LinkIndex)
	switch {
	case nlerr.IsNotFound(err):
		return kernelTarget{}, false
	case err != nil:
		return kernelTarget{all: true}, true
	}
	a := link.Attrs()
	if id, ok := strings.CutPrefix(a.Alias, ownerPrefix(m.instance)); ok {
		return kernelTarget{network: id}, true
	}
	if id, ok := strings.CutPrefix(a.Alias, bridgePrefix(m.instance)); ok {
		return kernelTarget{network: id}, true
	}
	if id := m.networkOfDevice(a.Name); id != "" {
		return kernelTarget{network: id}, true
	}
	if strings.HasPrefix(a.Alias, "felt:"+m.instance+":") {
		return kernelTarget{}, false // felt's other links (veths) carry nothing of the overlay
	}
	return kernelTarget{all: true}, true
}

// bridgePrefix is the alias prefix of the driver's bridges
// (driver.aliasNetwork): the overlay reads it, never writes it.
func bridgePrefix(instance string) string { return "felt:" + instance + ":net:" }

// routeTarget: one of felt's routes was deleted, by hand or by the
// kernel, concerning the network whose pool holds its destination (none
// attached: a teardown's, nothing to repair), if it is a route to one of
// the network's peers (attached.wantsRoute): a route to a subnet no peer
// holds is one a sync removed itself, or a stray, and reconciling for it
// would make each peer's departure, and each stray the resync prunes,
// cost one more full Sync of every peer; or a default route
// appeared, which is how the underlay is found when FELT_IFACE is not set
// (a DHCP client adds it back after the link came up): every network.
func (m *Manager) routeTarget(u netlink.RouteUpdate) (kernelTarget, bool) {
	switch u.Type {
	case unix.RTM_DELROUTE:
		if u.Protocol != RouteProtocol {
			return kernelTarget{}, false
		}
		// A route to the whole pool (the udp and wireguard devices' pool
		// route, wireguard's blackhole) is no peer's but felt's all the
		// same: its deletion reconciles too.
		if id, a, pool := m.networkOfRoute(u.Dst); a != nil {
			if dst := kernel.PrefixOf(u.Dst).Masked(); dst == pool.Masked() || a.wantsRoute(dst) {
				return kernelTarget{network: id}, true
			}
		}
		return kernelTarget{}, false
	case unix.RTM_NEWROUTE:
		return kernelTarget{all: true}, u.Family == netlink.FAMILY_V4 && isDefault(u.Dst)
	}
	return kernelTarget{}, false
}

// networkOfRoute is the attached network whose pool holds dst (and that
// pool), or nil.
// felt routes only into pools, and a host has one network per pool.
func (m *Manager) networkOfRoute(dst *net.IPNet) (string, *attached, netip.Prefix) {
	if dst == nil {
		return "", nil, netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(dst.IP.To4())
	if !ok {
		return "", nil, netip.Prefix{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, a := range m.networks {
		if a.view.Pool.Contains(ip) {
			return id, a, a.view.Pool
		}
	}
	return "", nil, netip.Prefix{}
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}
