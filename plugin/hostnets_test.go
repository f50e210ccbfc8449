package plugin

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
	"github.com/felt-net/felt/testkit/netns"
)

// The IPAM, wired to a host's real interfaces (a namespace's): a pool
// overlapping an interface's network is refused naming the interface; one
// holding only felt's own bridge (found by its alias) is not.
func TestPoolOverlappingHostInterfaceRefused(t *testing.T) {
	ns := netns.New(t, "hostnets")
	ns.Bridge(t, "ul0")
	ns.AddAddr(t, "ul0", "10.99.1.7/24")
	ns.Bridge(t, "fbr")
	ns.AddAddr(t, "fbr", "10.42.3.1/24")
	if err := ns.NL.LinkSetAlias(ns.Link(t, "fbr"), "felt:0123abcd:net:x"); err != nil {
		t.Fatal(err)
	}

	nets, err := hostNetworks(ns.NL, "0123abcd")(context.Background(), netip.MustParsePrefix("10.0.0.0/8"))
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]ipam.HostNetwork{}
	for _, n := range nets {
		found[n.Iface] = n
	}
	if n := found["ul0"]; n.Prefix.String() != "10.99.1.0/24" || n.Felt {
		t.Fatalf("ul0: %+v (all: %+v)", n, nets)
	}
	if n := found["fbr"]; n.Prefix.String() != "10.42.3.0/24" || !n.Felt {
		t.Fatalf("fbr: %+v (all: %+v)", n, nets)
	}
	// Only the networks overlapping the pool asked about.
	nets, err = hostNetworks(ns.NL, "0123abcd")(context.Background(), netip.MustParsePrefix("10.42.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 1 || nets[0].Iface != "fbr" {
		t.Fatalf("networks overlapping 10.42.0.0/16: %+v, want fbr's alone", nets)
	}

	d := ipamOfInstance(t, ns, "0123abcd", netip.MustParseAddr("10.99.1.7"))
	_, err = d.RequestPool(context.Background(), &api.RequestPoolRequest{Pool: "10.99.0.0/16"})
	if err == nil || !strings.Contains(err.Error(), "overlaps 10.99.1.0/24, the network of this host's interface ul0") {
		t.Fatalf("pool over ul0's network: %v", err)
	}
	if _, err := d.RequestPool(context.Background(), &api.RequestPoolRequest{Pool: "10.42.0.0/16"}); err != nil {
		t.Fatalf("pool holding felt's own bridge: %v", err)
	}
}

// Only this felt's links are let inside a pool: a bridge merely named
// felt-something (Docker's -o com.docker.network.bridge.name=felt-lab) and
// another felt instance's bridge are the host's networks like any other; a
// bridge named as felt named them before aliases, without an alias, is
// felt's.
func TestPoolOverFeltLookalikeRefused(t *testing.T) {
	ns := netns.New(t, "hostnets2")
	for _, l := range []struct{ name, addr, alias string }{
		{"felt-lab", "10.43.1.1/24", ""},
		{"fbr2", "10.44.1.1/24", "felt:99999999:net:y"},
		{"felt-0123456789", "10.45.1.1/24", ""},
	} {
		ns.Bridge(t, l.name)
		ns.AddAddr(t, l.name, l.addr)
		if l.alias != "" {
			if err := ns.NL.LinkSetAlias(ns.Link(t, l.name), l.alias); err != nil {
				t.Fatal(err)
			}
		}
	}
	d := ipamOfInstance(t, ns, "0123abcd", netip.MustParseAddr("192.0.2.7"))
	for pool, iface := range map[string]string{"10.43.0.0/16": "felt-lab", "10.44.0.0/16": "fbr2"} {
		_, err := d.RequestPool(context.Background(), &api.RequestPoolRequest{Pool: pool})
		if err == nil || !strings.Contains(err.Error(), "this host's interface "+iface) {
			t.Errorf("pool %s over %s: %v", pool, iface, err)
		}
	}
	if _, err := d.RequestPool(context.Background(), &api.RequestPoolRequest{Pool: "10.45.0.0/16"}); err != nil {
		t.Errorf("pool holding felt's own unaliased bridge: %v", err)
	}
}

// ipamOfInstance is an IPAM driver of felt instance inst, with an embedded
// store, that reads the host's networks in ns and leases as host h at
// publicIP.
func ipamOfInstance(t *testing.T, ns *netns.NS, inst string, publicIP netip.Addr) *ipam.Driver {
	t.Helper()
	s, err := boltkv.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return ipam.New(ipam.Config{State: state.New(s), Registry: lease.NewRegistry(s, "felt/", nil), HostNetworks: hostNetworks(ns.NL, inst),
		Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
			return lease.Owner{HostID: "h", PublicIP: publicIP}, nil
		}})
}
