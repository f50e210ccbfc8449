package overlay_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/hostgw"
)

func TestHostGW(t *testing.T) {
	t.Parallel()
	// a and b share a segment; c is behind a router, which host-gw cannot use.
	tb := newTestbed(t, "192.168.77.1", "192.168.77.2", "192.168.78.3")
	a, b, c := tb.hosts[0], tb.hosts[1], tb.hosts[2]
	n := a.network("host-gw", false)
	b.apply(t, b.network("host-gw", false), a)

	t.Run("unreachable peer", func(t *testing.T) {
		err := a.try(n, b, c)
		var unreachable *hostgw.UnreachablePeerError
		if !errors.As(err, &unreachable) || unreachable.HostID != c.id || unreachable.PublicIP != c.pub {
			t.Fatalf("Sync with a peer in another subnet: got %v, want an UnreachablePeerError for %s", err, c.id)
		}
		if !strings.Contains(err.Error(), "L2 segment") {
			t.Errorf("error does not explain the L2 requirement: %v", err)
		}
		for _, want := range []string{"level=ERROR", c.id, c.pub.String(), "L2 segment"} {
			if !a.logs.contains(want) {
				t.Errorf("log lacks %q:\n%s", want, a.logs)
			}
		}
		routes := feltRoutes(t, a)
		if r, ok := routes[c.subnet]; ok {
			t.Fatalf("route installed towards unreachable peer: %+v", r)
		}
		r, ok := routes[b.subnet]
		if !ok || !r.Gw.Equal(net.IP(b.pub.AsSlice())) || r.LinkIndex != a.ns.Link(t, underlayIface).Attrs().Index {
			t.Fatalf("route to reachable peer %s: got %+v (present %v), want via %s dev %s", b.id, r, ok, b.pub, underlayIface)
		}
		mustPing(t, a, b)
		mustPing(t, b, a)
	})

	t.Run("Check", func(t *testing.T) {
		check := func(peers ...*tbHost) error {
			return a.b["host-gw"].Check(context.Background(), n, func(context.Context) ([]lease.Lease, error) { return leases(peers...), nil })
		}
		if err := check(b); err != nil {
			t.Fatalf("peer on the same segment: %v", err)
		}
		err := check(b, c)
		if err == nil || !strings.Contains(err.Error(), c.id) || !strings.Contains(err.Error(), c.pub.String()) ||
			strings.Contains(err.Error(), b.id) {
			t.Fatalf("got %v, want an error naming %s at %s only", err, c.id, c.pub)
		}
	})

	t.Run("stale entries", func(t *testing.T) {
		eth := a.ns.Link(t, underlayIface).Attrs().Index
		stale := &netlink.Route{Dst: ipnet("10.42.9.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: overlay.RouteProtocol}
		if err := a.ns.NL.RouteAdd(stale); err != nil {
			t.Fatal(err)
		}
		a.apply(t, n, b)
		if _, ok := feltRoutes(t, a)[prefix(stale.Dst)]; ok {
			t.Fatal("stale route not removed")
		}
	})

	t.Run("peer removed", func(t *testing.T) {
		a.apply(t, n)
		if _, ok := feltRoutes(t, a)[b.subnet]; ok {
			t.Fatal("route to removed peer remains")
		}
		mustNotPing(t, a, b)
		a.apply(t, n, b)
		mustPing(t, a, b)
	})

	t.Run("teardown", func(t *testing.T) {
		if err := a.b["host-gw"].Teardown(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		if routes := feltRoutes(t, a); len(routes) != 0 {
			t.Fatalf("routes remain after Teardown: %v", routes)
		}
	})
}
