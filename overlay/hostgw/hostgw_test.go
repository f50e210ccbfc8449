package hostgw_test

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
	"github.com/felt-net/felt/testkit/testbed"
)

func TestHostGW(t *testing.T) {
	t.Parallel()
	// a and b share a segment; c is behind a router, which host-gw cannot use.
	tb := testbed.New(t, "192.168.77.1", "192.168.77.2", "192.168.78.3")
	a, b, c := tb.Hosts[0], tb.Hosts[1], tb.Hosts[2]
	n := a.Network("host-gw", false)
	b.Apply(t, b.Network("host-gw", false), a)

	t.Run("unreachable peer", func(t *testing.T) {
		err := a.Try(n, b, c)
		var unreachable *hostgw.UnreachablePeerError
		if !errors.As(err, &unreachable) || unreachable.HostID != c.ID || unreachable.PublicIP != c.Pub {
			t.Fatalf("Sync with a peer in another subnet: got %v, want an UnreachablePeerError for %s", err, c.ID)
		}
		if !strings.Contains(err.Error(), "L2 segment") {
			t.Errorf("error does not explain the L2 requirement: %v", err)
		}
		for _, want := range []string{"level=ERROR", c.ID, c.Pub.String(), "L2 segment"} {
			if !a.Logs.Contains(want) {
				t.Errorf("log lacks %q:\n%s", want, a.Logs)
			}
		}
		routes := testbed.FeltRoutes(t, a)
		if r, ok := routes[c.Subnet]; ok {
			t.Fatalf("route installed towards unreachable peer: %+v", r)
		}
		r, ok := routes[b.Subnet]
		if !ok || !r.Gw.Equal(net.IP(b.Pub.AsSlice())) || r.LinkIndex != a.NS.Link(t, testbed.UnderlayIface).Attrs().Index {
			t.Fatalf("route to reachable peer %s: got %+v (present %v), want via %s dev %s", b.ID, r, ok, b.Pub, testbed.UnderlayIface)
		}
		testbed.MustPing(t, a, b)
		testbed.MustPing(t, b, a)
	})

	t.Run("Check", func(t *testing.T) {
		check := func(peers ...*testbed.Host) error {
			return a.B["host-gw"].Check(context.Background(), n, func(context.Context) ([]lease.Lease, error) { return testbed.Leases(peers...), nil })
		}
		if err := check(b); err != nil {
			t.Fatalf("peer on the same segment: %v", err)
		}
		err := check(b, c)
		if err == nil || !strings.Contains(err.Error(), c.ID) || !strings.Contains(err.Error(), c.Pub.String()) ||
			strings.Contains(err.Error(), b.ID) {
			t.Fatalf("got %v, want an error naming %s at %s only", err, c.ID, c.Pub)
		}
	})

	t.Run("stale entries", func(t *testing.T) {
		eth := a.NS.Link(t, testbed.UnderlayIface).Attrs().Index
		stale := &netlink.Route{Dst: testbed.IPNet("10.42.9.0/24"), Gw: net.ParseIP("192.168.77.2"), LinkIndex: eth, Protocol: overlay.RouteProtocol}
		if err := a.NS.NL.RouteAdd(stale); err != nil {
			t.Fatal(err)
		}
		a.Apply(t, n, b)
		if _, ok := testbed.FeltRoutes(t, a)[testbed.Prefix(stale.Dst)]; ok {
			t.Fatal("stale route not removed")
		}
	})

	t.Run("peer removed", func(t *testing.T) {
		a.Apply(t, n)
		if _, ok := testbed.FeltRoutes(t, a)[b.Subnet]; ok {
			t.Fatal("route to removed peer remains")
		}
		testbed.MustNotPing(t, a, b)
		a.Apply(t, n, b)
		testbed.MustPing(t, a, b)
	})

	t.Run("teardown", func(t *testing.T) {
		if err := a.B["host-gw"].Teardown(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		if routes := testbed.FeltRoutes(t, a); len(routes) != 0 {
			t.Fatalf("routes remain after Teardown: %v", routes)
		}
	})
}
