package driver

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	ipamapi "github.com/docker/go-plugins-helpers/ipam"
	api "github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
	"github.com/felt-net/felt/testkit/netns"
)

// env is a driver working in a test namespace (the "host") on a temp store,
// without firewall or overlay: what these tests look at is the links.
type env struct {
	d    *Driver
	ipam *ipam.Driver
	host *netns.NS
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvIn(t, netns.New(t, "host"), "testinst")
}

// newEnvIn is newEnv for a felt of instance inst in host, a namespace it
// may share with other felts (each with its own store).
func newEnvIn(t *testing.T, host *netns.NS, inst string) *env {
	t.Helper()
	kv, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	st := state.New(kv)
	reg := lease.NewRegistry(kv, "felt/", nil)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &env{host: host}
	e.ipam = ipam.New(ipam.Config{
		State: st, Registry: reg, Log: log,
		Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
			return lease.Owner{HostID: inst + "-host", PublicIP: netip.MustParseAddr("192.0.2.1")}, nil
		},
	})
	e.d = New(Config{State: st, Registry: reg, Netlink: host.NL, Backends: testBackends(), Instance: inst, Log: log})
	return e
}

var ctx = context.Background()

// id returns a Docker-like ID (64 lowercase hex characters) starting with
// prefix and filled with fill.
func id(prefix string, fill byte) string {
	return prefix + strings.Repeat(string(fill), 64-len(prefix))
}

type testNet struct {
	ID      string
	PoolID  string
	Subnet  netip.Prefix
	Gateway string // CIDR, as Docker sends it
}

// network does what `docker network create -d felt --ipam-driver felt
// --subnet pool` does.
func (e *env) network(t *testing.T, netID, pool string) testNet {
	t.Helper()
	p, err := e.ipam.RequestPool(ctx, &ipamapi.RequestPoolRequest{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	n := testNet{ID: netID, PoolID: p.PoolID, Subnet: netip.MustParsePrefix(p.Pool), Gateway: p.Data["com.docker.network.gateway"]}
	err = e.d.CreateNetwork(ctx, &api.CreateNetworkRequest{NetworkID: netID,
		Options:  map[string]any{optGeneric: map[string]any{}},
		IPv4Data: []*api.IPAMData{{AddressSpace: ipam.GlobalAddressSpace, Pool: p.Pool, Gateway: n.Gateway}}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// endpoint does what `docker run --network` does up to Join, then moves the
// container end into a namespace of its own as Docker does. It returns the
// container namespace.
func (e *env) endpoint(t *testing.T, n testNet, epID string) *netns.NS {
	t.Helper()
	mac := "02:42:aa:bb:cc:01"
	a, err := e.ipam.RequestAddress(ctx, &ipamapi.RequestAddressRequest{PoolID: n.PoolID,
		Options: map[string]string{"com.docker.network.endpoint.macaddress": mac}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.CreateEndpoint(ctx, &api.CreateEndpointRequest{NetworkID: n.ID, EndpointID: epID,
		Interface: &api.EndpointInterface{Address: a.Address, MacAddress: mac}}); err != nil {
		t.Fatal(err)
	}
	j, err := e.d.Join(ctx, &api.JoinRequest{NetworkID: n.ID, EndpointID: epID, SandboxKey: "/var/run/docker/netns/x"})
	if err != nil {
		t.Fatal(err)
	}
	c := netns.New(t, "ctr")
	peer := e.host.Link(t, j.InterfaceName.SrcName)
	if err := e.host.NL.LinkSetNsFd(peer, int(c.Handle)); err != nil {
		t.Fatalf("move %s into the container: %v", j.InterfaceName.SrcName, err)
	}
	return c
}

// link returns the link called name in ns, or nil.
func link(t *testing.T, ns *netns.NS, name string) netlink.Link {
	t.Helper()
	l, err := ns.NL.LinkByName(name)
	if nlerr.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func wantErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error = %.300s, want one containing %q", err, w)
		}
	}
}

// wantNetworks fails unless want networks are recorded, saying after what.
func (e *env) wantNetworks(t *testing.T, want int, after string) {
	t.Helper()
	if nets, err := e.d.cfg.State.Networks(ctx); err != nil || len(nets) != want {
		t.Fatalf("%s: networks recorded %+v (%v), want %d", after, nets, err, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ipamPool(pool string) *ipamapi.RequestPoolRequest {
	return &ipamapi.RequestPoolRequest{Pool: pool}
}

// addrIn is the k-th address of n's subnet, as a CIDR with the subnet's mask.
func addrIn(n testNet, k int) string {
	a := n.Subnet.Addr()
	for range k {
		a = a.Next()
	}
	return netip.PrefixFrom(a, n.Subnet.Bits()).String()
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
