package driver

import (
	"net/netip"
	"testing"

	ipamapi "github.com/docker/go-plugins-helpers/ipam"
	api "github.com/docker/go-plugins-helpers/network"
)

// The route to felt's DNS address goes to the first felt endpoint of a
// sandbox only (Docker fails a start whose second network returns the same
// route), comes again on a repeated Join of that endpoint, and moves to
// another felt network of the sandbox after the holder's Leave.
func TestJoinDNSRouteOncePerSandbox(t *testing.T) {
	e := newEnv(t)
	e.d.cfg.DNS = netip.MustParseAddr("169.254.53.53")
	blue := e.network(t, id("aa", 'a'), "10.70.0.0/16")
	red := e.network(t, id("bb", 'b'), "10.71.0.0/16")
	create := func(n testNet, epID string) {
		t.Helper()
		a, err := e.ipam.RequestAddress(ctx, &ipamapi.RequestAddressRequest{PoolID: n.PoolID})
		must(t, err)
		_, err = e.d.CreateEndpoint(ctx, &api.CreateEndpointRequest{NetworkID: n.ID, EndpointID: epID,
			Interface: &api.EndpointInterface{Address: a.Address}})
		must(t, err)
	}
	dnsRoute := func(n testNet, epID, sandbox string) bool {
		t.Helper()
		j, err := e.d.Join(ctx, &api.JoinRequest{NetworkID: n.ID, EndpointID: epID, SandboxKey: sandbox})
		must(t, err)
		has := false
		for _, r := range j.StaticRoutes {
			if r.Destination == "169.254.53.53/32" {
				if r.NextHop != netip.MustParsePrefix(n.Gateway).Addr().String() {
					t.Fatalf("DNS route via %s, want the gateway %s", r.NextHop, n.Gateway)
				}
				has = true
			}
		}
		return has
	}
	epB, epR, epOther := id("e1", '1'), id("e2", '2'), id("e3", '3')
	create(blue, epB)
	create(red, epR)
	create(red, epOther)
	const sb, other = "/var/run/docker/netns/0a1b2c3d4e5f", "/var/run/docker/netns/ffffffffffff"
	if !dnsRoute(blue, epB, sb) {
		t.Fatal("the sandbox's first felt endpoint has no DNS route")
	}
	if dnsRoute(red, epR, sb) {
		t.Fatal("a second felt endpoint of the sandbox got the DNS route too (Docker fails the start)")
	}
	if !dnsRoute(blue, epB, sb) {
		t.Fatal("a repeated Join of the holder lost the DNS route")
	}
	if !dnsRoute(red, epOther, other) {
		t.Fatal("another sandbox's endpoint has no DNS route")
	}
	must(t, e.d.Leave(ctx, &api.LeaveRequest{NetworkID: blue.ID, EndpointID: epB}))
	if !dnsRoute(red, epR, sb) {
		t.Fatal("after the holder left, the sandbox's other felt endpoint did not get the DNS route")
	}
	// DNS off: no route.
	e.d.cfg.DNS = netip.Addr{}
	if dnsRoute(blue, epB, sb) {
		t.Fatal("a DNS route with FELT_DNS=off")
	}
}
