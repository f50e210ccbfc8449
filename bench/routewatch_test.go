package bench

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/overlay"
)

// routeWatch notes when felt's route to each subnet of a pool first appears
// in one host's namespace. It listens to rtnetlink route events, so the time
// is when the kernel installed the route, not when a poll happened to look;
// a listing by netlink backs it up in case events were dropped.
type routeWatch struct {
	ns   string
	pool netip.Prefix
	nl   *netlink.Handle

	mu   sync.Mutex
	seen map[netip.Prefix]time.Time
	lost int // times the event socket failed and was reopened
}

func watchRoutes(s *scope, ns string, pool netip.Prefix) *routeWatch {
	h, err := netns.GetFromName(ns)
	if err != nil {
		s.Fatalf("namespace %s: %v", ns, err)
	}
	s.Cleanup(func() { h.Close() })
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		s.Fatalf("netlink handle in %s: %v", ns, err)
	}
	s.Cleanup(nl.Close)
	w := &routeWatch{ns: ns, pool: pool, nl: nl, seen: map[netip.Prefix]time.Time{}}
	done := make(chan struct{})
	s.Cleanup(func() { close(done) })
	if err := w.subscribe(h, done); err != nil {
		s.Fatalf("route events in %s: %v", ns, err)
	}
	return w
}

// subscribe follows route events until done. When the event socket fails
// (it overflows if a burst outruns the reader) the library closes the
// channel: catch up by a listing and subscribe again.
func (w *routeWatch) subscribe(h netns.NsHandle, done chan struct{}) error {
	ch := make(chan netlink.RouteUpdate, 16384)
	err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace:         &h,
		ReceiveBufferSize: 16 << 20, // a reconcile replaces 1,000 routes at once, each an event
		ErrorCallback:     func(error) {},
	})
	if err != nil {
		return err
	}
	go func() {
		for u := range ch {
			if u.Type != unix.RTM_NEWROUTE || u.Protocol != overlay.RouteProtocol || u.Dst == nil {
				continue
			}
			w.note(u.Dst, time.Now())
		}
		select {
		case <-done:
			return
		default:
		}
		w.mu.Lock()
		w.lost++
		w.mu.Unlock()
		if err := w.subscribe(h, done); err == nil {
			_, _ = w.list()
		}
	}()
	return nil
}

func (w *routeWatch) note(dst interface{ String() string }, at time.Time) {
	p, err := netip.ParsePrefix(dst.String())
	if err != nil || !w.pool.Overlaps(p) {
		return
	}
	w.mu.Lock()
	if _, ok := w.seen[p]; !ok {
		w.seen[p] = at
	}
	w.mu.Unlock()
}

// seenAt says when the route to subnet appeared, if it has.
func (w *routeWatch) seenAt(subnet netip.Prefix) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.seen[subnet]
	return t, ok
}

// list reads felt's routes into the pool now, recording any the events
// missed (with the time of this listing: an upper bound).
func (w *routeWatch) list() (int, error) {
	now := time.Now()
	rs, err := w.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return 0, fmt.Errorf("routes in %s: %w", w.ns, err)
	}
	n := 0
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		if p, err := netip.ParsePrefix(r.Dst.String()); err == nil && w.pool.Overlaps(p) {
			n++
			w.note(r.Dst, now)
		}
	}
	return n, nil
}

// waitAll waits until subnet's route is on every host and returns the
// latest of the times it appeared. Events are checked every millisecond,
// listings every 250 ms as the fallback.
func waitAll(ws []*routeWatch, subnet netip.Prefix, bound time.Duration) (time.Time, error) {
	deadline := time.Now().Add(bound)
	lastList := time.Now()
	for {
		latest, all := time.Time{}, true
		for _, w := range ws {
			t, ok := w.seenAt(subnet)
			if !ok {
				all = false
				break
			}
			if t.After(latest) {
				latest = t
			}
		}
		if all {
			return latest, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("route to %s not on every host after %v", subnet, bound)
		}
		if time.Since(lastList) > 250*time.Millisecond {
			for _, w := range ws {
				if _, err := w.list(); err != nil {
					return time.Time{}, err
				}
			}
			lastList = time.Now()
		}
		time.Sleep(time.Millisecond)
	}
}
