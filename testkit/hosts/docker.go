package hosts

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	ipamapi "github.com/docker/go-plugins-helpers/ipam"
	netapi "github.com/docker/go-plugins-helpers/network"

	"github.com/felt-net/felt/testkit"
)

// This file plays Docker: the calls it makes, in Docker's order, for
// `docker network create`, `docker run` and their undoing.

// RandomID is a 64-hex-digit ID as Docker makes them for networks and
// endpoints.
func RandomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Net is one `docker network create` on one host.
type Net struct {
	Host    *Host
	ID      string
	PoolID  string
	Subnet  netip.Prefix // this host's subnet (what docker network inspect shows)
	Gateway netip.Addr
}

// NetSpec is what the user passes to docker network create.
type NetSpec struct {
	Subnet   string
	IPRange  string
	Opts     map[string]string // -o
	IPAMOpts map[string]string // --ipam-opt
	Internal bool
}

// CreateNetwork does RequestPool then CreateNetwork, releasing the pool if
// CreateNetwork fails, as Docker does.
func (h *Host) CreateNetwork(spec NetSpec) (*Net, error) {
	var pool ipamapi.RequestPoolResponse
	if err := h.Call("IpamDriver.RequestPool", ipamapi.RequestPoolRequest{AddressSpace: "FeltLocal", Pool: spec.Subnet, SubPool: spec.IPRange, Options: spec.IPAMOpts}, &pool); err != nil {
		return nil, err
	}
	gw := pool.Data["com.docker.network.gateway"]
	n := &Net{Host: h, ID: RandomID(), PoolID: pool.PoolID}
	var err error
	if n.Subnet, err = netip.ParsePrefix(pool.Pool); err != nil {
		return nil, fmt.Errorf("RequestPool returned pool %q: %w", pool.Pool, err)
	}
	gwp, err := netip.ParsePrefix(gw)
	if err != nil {
		return nil, fmt.Errorf("RequestPool returned gateway %q: %w", gw, err)
	}
	n.Gateway = gwp.Addr()
	generic := map[string]any{}
	for k, v := range spec.Opts {
		generic[k] = v
	}
	opts := map[string]any{"com.docker.network.generic": generic, "com.docker.network.enable_ipv6": false}
	if spec.Internal {
		opts["com.docker.network.internal"] = true
	}
	err = h.Call("NetworkDriver.CreateNetwork", netapi.CreateNetworkRequest{NetworkID: n.ID, Options: opts,
		IPv4Data: []*netapi.IPAMData{{AddressSpace: "FeltLocal", Pool: pool.Pool, Gateway: gw}}}, nil)
	if err != nil {
		_ = h.Call("IpamDriver.ReleasePool", ipamapi.ReleasePoolRequest{PoolID: pool.PoolID}, nil)
		return nil, err
	}
	return n, nil
}

// MustNetwork creates a network and removes it at cleanup.
func (h *Host) MustNetwork(t testing.TB, spec NetSpec) *Net {
	t.Helper()
	n, err := h.CreateNetwork(spec)
	if err != nil {
		t.Fatalf("create network %s: %v", spec.Subnet, err)
	}
	t.Cleanup(func() { _ = n.Delete() })
	return n
}

// Delete does DeleteNetwork then ReleasePool.
func (n *Net) Delete() error {
	if err := n.Host.Call("NetworkDriver.DeleteNetwork", netapi.DeleteNetworkRequest{NetworkID: n.ID}, nil); err != nil {
		return err
	}
	return n.Host.Call("IpamDriver.ReleasePool", ipamapi.ReleasePoolRequest{PoolID: n.PoolID}, nil)
}

// Ctr is a container: a namespace holding the endpoint's interface.
type Ctr struct {
	Net        *Net
	NS         string
	EndpointID string
	Addr       netip.Prefix
}

// Run does what `docker run --network` does with felt: RequestAddress,
// CreateEndpoint, Join, then moves the veth into a new namespace, renames it
// eth0 and sets its address and routes. ip may be "" (dynamic).
func (n *Net) Run(t testing.TB, ip string) (*Ctr, error) {
	t.Helper()
	h := n.Host
	mac := fmt.Sprintf("02:aa:%02x:%02x:%02x:%02x", rb(), rb(), rb(), rb())
	var addr ipamapi.RequestAddressResponse
	if err := h.Call("IpamDriver.RequestAddress", ipamapi.RequestAddressRequest{PoolID: n.PoolID, Address: ip,
		Options: map[string]string{"com.docker.network.endpoint.macaddress": mac}}, &addr); err != nil {
		return nil, err
	}
	c := &Ctr{Net: n, EndpointID: RandomID()}
	var err error
	if c.Addr, err = netip.ParsePrefix(addr.Address); err != nil {
		return nil, err
	}
	var ep netapi.CreateEndpointResponse
	if err := h.Call("NetworkDriver.CreateEndpoint", netapi.CreateEndpointRequest{NetworkID: n.ID, EndpointID: c.EndpointID,
		Interface: &netapi.EndpointInterface{Address: addr.Address, MacAddress: mac}}, &ep); err != nil {
		return nil, err
	}
	var join netapi.JoinResponse
	if err := h.Call("NetworkDriver.Join", netapi.JoinRequest{NetworkID: n.ID, EndpointID: c.EndpointID, SandboxKey: "/var/run/docker/netns/test"}, &join); err != nil {
		return nil, err
	}
	if join.InterfaceName.DstPrefix != "eth" || join.InterfaceName.SrcName == "" {
		t.Fatalf("Join returned interface %+v", join.InterfaceName)
	}
	if join.Gateway != "" {
		t.Fatalf("Join returned gateway %q: felt leaves the default route to docker_gwbridge", join.Gateway)
	}
	c.NS = NewNS(t, "c")
	src := join.InterfaceName.SrcName
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "set", src, "netns", c.NS)
	testkit.MustRun(t, "ip", "-n", c.NS, "link", "set", src, "name", "eth0")
	testkit.MustRun(t, "ip", "-n", c.NS, "addr", "add", c.Addr.String(), "dev", "eth0")
	testkit.MustRun(t, "ip", "-n", c.NS, "link", "set", "eth0", "up")
	for _, r := range join.StaticRoutes {
		testkit.MustRun(t, "ip", "-n", c.NS, "route", "add", r.Destination, "via", r.NextHop)
	}
	return c, nil
}

func rb() byte { b := make([]byte, 1); _, _ = rand.Read(b); return b[0] }

// MustRun runs a container or fails.
func (n *Net) MustRun(t testing.TB, ip string) *Ctr {
	t.Helper()
	c, err := n.Run(t, ip)
	if err != nil {
		t.Fatalf("run container on %s: %v", n.Subnet, err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

// Stop does Leave, DeleteEndpoint and ReleaseAddress, as docker stop does
// (the namespace goes at test cleanup).
func (c *Ctr) Stop() error {
	h := c.Net.Host
	if err := h.Call("NetworkDriver.Leave", netapi.LeaveRequest{NetworkID: c.Net.ID, EndpointID: c.EndpointID}, nil); err != nil {
		return err
	}
	if err := h.Call("NetworkDriver.DeleteEndpoint", netapi.DeleteEndpointRequest{NetworkID: c.Net.ID, EndpointID: c.EndpointID}, nil); err != nil {
		return err
	}
	return h.Call("IpamDriver.ReleaseAddress", ipamapi.ReleaseAddressRequest{PoolID: c.Net.PoolID, Address: c.Addr.Addr().String()}, nil)
}

// Ping reports whether c reaches ip: up to two echo requests, a second
// apart (testkit.PingFrom), so one lost to a neighbour being resolved does
// not count.
func (c *Ctr) Ping(ip netip.Addr) error {
	if err := testkit.PingFrom(c.NS, ip, 2, time.Second); err != nil {
		return fmt.Errorf("ping %s from %s: %w", ip, c.Addr, err)
	}
	return nil
}

// MustPing fails unless c reaches ip.
func (c *Ctr) MustPing(t testing.TB, ip netip.Addr) {
	t.Helper()
	if err := c.Ping(ip); err != nil {
		t.Fatal(err)
	}
}

// MustNotPing fails if c reaches ip.
func (c *Ctr) MustNotPing(t testing.TB, ip netip.Addr) {
	t.Helper()
	if err := c.Ping(ip); err == nil {
		t.Fatalf("%s reached %s: they must be isolated", c.Addr, ip)
	}
}

// FeltLinks lists the links in ns whose alias marks them as felt's.
func FeltLinks(t testing.TB, ns string) []string {
	t.Helper()
	out := testkit.MustRun(t, "ip", "-n", ns, "-o", "link", "show")
	var links []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "alias felt:") || strings.Contains(l, ": felt") || strings.Contains(l, ": fv") || strings.Contains(l, ": fc") {
			links = append(links, strings.TrimSpace(l))
		}
	}
	return links
}
