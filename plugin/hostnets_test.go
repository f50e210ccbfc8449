package plugin

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/internal/testnet"
	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// The IPAM, wired to a host's real interfaces (a namespace's): a pool
// overlapping an interface's network is refused naming the interface; one
// holding only felt's own bridge (found by its alias) is not.
func TestPoolOverlappingHostInterfaceRefused(t *testing.T) {
	ns := testnet.New(t, "hostnets")
	ns.Bridge(t, "ul0")
	ns.AddAddr(t, "ul0", "10.99.1.7/24")
	ns.Bridge(t, "fbr")
	ns.AddAddr(t, "fbr", "10.42.3.1/24")
	if err := ns.NL.LinkSetAlias(ns.Link(t, "fbr"), "felt:0123abcd:net:x"); err != nil {
		t.Fatal(err)
	}

	nets, err := hostNetworks(ns.NL)(context.Background())
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

	s, err := boltkv.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := ipam.New(ipam.Config{State: state.New(s), Registry: lease.NewRegistry(s, "felt/", nil), HostNetworks: hostNetworks(ns.NL),
		Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
			return lease.Owner{HostID: "h", PublicIP: netip.MustParseAddr("10.99.1.7")}, nil
		}})
	_, err = d.RequestPool(context.Background(), &api.RequestPoolRequest{Pool: "10.99.0.0/16"})
	if err == nil || !strings.Contains(err.Error(), "overlaps 10.99.1.0/24, the network of this host's interface ul0") {
		t.Fatalf("pool over ul0's network: %v", err)
	}
	if _, err := d.RequestPool(context.Background(), &api.RequestPoolRequest{Pool: "10.42.0.0/16"}); err != nil {
		t.Fatalf("pool holding felt's own bridge: %v", err)
	}
}
