package overlay

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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

// watchKernel turns relevant kernel events into reconciles until ctx ends;
// it returns once its subscriptions are closed.
func (m *Manager) watchKernel(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	poke := make(chan struct{}, 1)
	notify := func() {
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
		}, m.linkFilter(), notify)
	})
	wg.Go(func() {
		follow(ctx, m, "address", func(ch chan netlink.AddrUpdate, done chan struct{}) error {
			return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: ns, ErrorCallback: onErr, ReceiveBufferSize: kernelRcvBuf})
		}, addrMatters, notify)
	})
	wg.Go(func() {
		follow(ctx, m, "route", func(ch chan netlink.RouteUpdate, done chan struct{}) error {
			return netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: ns, ErrorCallback: onErr, ReceiveBufferSize: kernelRcvBuf})
		}, routeMatters, notify)
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
		m.cfg.Log.Debug("kernel change; reconciling")
		m.Kick()
	}
}

// follow keeps one kernel subscription going until ctx ends, calling
// notify for every update that matters.
func follow[T any](ctx context.Context, m *Manager, what string, subscribe func(chan T, chan struct{}) error, matters func(T) bool, notify func()) {
	for first := true; ctx.Err() == nil; first = false {
		ch := make(chan T, 64)
		done := make(chan struct{})
		if err := subscribe(ch, done); err != nil {
			close(done)
			m.cfg.Log.Warn("cannot follow kernel events; retrying", "events", what, "err", err)
		} else {
			if !first {
				notify() // what happened while unsubscribed is unknown
			}
			receive(ctx, ch, matters, notify)
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
func receive[T any](ctx context.Context, ch chan T, matters func(T) bool, notify func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-ch:
			if !ok {
				return
			}
			if matters(u) {
				notify()
			}
		}
	}
}

// linkFilter returns what says which link updates matter: any change of
// felt's own overlay devices (deleted, set down) or of the underlay
// interface (down and up flushes its routes). The underlay's name is the
// last one found: one found by the default route cannot be found while
// the link is down, since the default route went with it.
func (m *Manager) linkFilter() func(netlink.LinkUpdate) bool {
	var underlay string
	return func(u netlink.LinkUpdate) bool {
		if u.Link == nil {
			return false
		}
		a := u.Link.Attrs()
		if strings.HasPrefix(a.Alias, ownerPrefix(m.instance)) {
			return true
		}
		if m.cfg.Underlay == nil {
			return false
		}
		if name, err := m.cfg.Underlay.Name(); err == nil {
			underlay = name
		}
		return a.Name == underlay
	}
}

// addrMatters: any IPv4 address change. Removing the underlay's address
// takes the routes via its subnet along; adding it back makes them
// possible again. Address changes are rare, so no finer filter.
func addrMatters(u netlink.AddrUpdate) bool { return u.LinkAddress.IP.To4() != nil }

// routeMatters: one of felt's routes was deleted, by hand or by the
// kernel; or a default route appeared, which is how the underlay is found
// when FELT_IFACE is not set (a DHCP client adds it back after the link
// came up).
func routeMatters(u netlink.RouteUpdate) bool {
	switch u.Type {
	case unix.RTM_DELROUTE:
		return u.Protocol == RouteProtocol
	case unix.RTM_NEWROUTE:
		return u.Family == netlink.FAMILY_V4 && isDefault(u.Dst)
	}
	return false
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}
