package integration

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// The kernel deletes every route through an interface that goes down or
// loses its address (a DHCP renewal does that), host-gw's routes included.
// felt follows kernel events and puts them back at once, not at the next
// periodic resync (issue 15, defect 9): here the resync is an hour away.
// The underlay is named (FELT_IFACE) or found by the default route, which
// goes with the link and comes back later, as a DHCP client puts it back.
func TestKernelChangesRepairedAtOnce(t *testing.T) {
	for _, tc := range []struct{ name, iface string }{
		{"FELT_IFACE", "FELT_IFACE=ul0"},
		{"default route", "FELT_IFACE="},
	} {
		t.Run(tc.name, func(t *testing.T) { testKernelChanges(t, tc.iface) })
	}
}

func testKernelChanges(t *testing.T, iface string) {
	c := hosts.NewCluster(t, feltBin, 2, longResync, iface)
	var ctrs []*hosts.Ctr
	for _, h := range c.Hosts {
		n := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16", Opts: map[string]string{"backend": "host-gw"}})
		ctrs = append(ctrs, n.MustRun(t, ""))
	}
	testkit.WaitFor(t, "cross-host ping", func() bool { return ctrs[1].Ping(ctrs[0].Addr.Addr()) == nil })
	h := c.Hosts[1]
	peer := ctrs[0].Net.Subnet
	route := func() string {
		out, _ := testkit.Run("ip", "-n", h.NS, "route", "show", peer.String(), "proto", "76")
		return strings.TrimSpace(out)
	}
	if route() == "" {
		t.Fatalf("no host-gw route to %s on %s", peer, h.NS)
	}
	gw := netip.MustParsePrefix(h.IP + "/24").Masked().Addr().Next()
	gone := func(what string) {
		t.Helper()
		if r := route(); r != "" {
			t.Fatalf("route %q survived %s: the test would prove nothing", r, what)
		}
	}
	repaired := func(what string) {
		t.Helper()
		within(t, 10*time.Second, "route to "+peer.String()+" back after "+what, func() bool { return route() != "" })
		within(t, 10*time.Second, "traffic after "+what, func() bool { return ctrs[1].Ping(ctrs[0].Addr.Addr()) == nil })
		ctrs[0].MustPing(t, ctrs[1].Addr.Addr())
	}

	testkit.MustRun(t, "ip", "-n", h.NS, "link", "set", "ul0", "down")
	gone("the link going down")
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "set", "ul0", "up")
	time.Sleep(500 * time.Millisecond) // the DHCP client takes a moment
	testkit.MustRun(t, "ip", "-n", h.NS, "route", "replace", "default", "via", gw.String())
	repaired("the underlay link went down and up")

	// A DHCP renewal that removes the address and adds it back, then the
	// default route.
	testkit.MustRun(t, "ip", "-n", h.NS, "addr", "del", h.IP+"/24", "dev", "ul0")
	gone("the address going")
	testkit.MustRun(t, "ip", "-n", h.NS, "addr", "add", h.IP+"/24", "dev", "ul0")
	time.Sleep(500 * time.Millisecond)
	testkit.MustRun(t, "ip", "-n", h.NS, "route", "replace", "default", "via", gw.String())
	repaired("the underlay address was removed and added back")

	// Someone deletes felt's route by hand.
	testkit.MustRun(t, "ip", "-n", h.NS, "route", "del", peer.String())
	repaired("the route was deleted")
}
