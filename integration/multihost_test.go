package integration

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// The same network on three hosts: every container reaches every other,
// TCP carries data intact; a restarted felt keeps its subnet and traffic.
func TestMultiHostBackends(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts map[string]string
	}{
		{"vxlan", map[string]string{"backend": "vxlan"}},
		{"vxlan-directrouting", map[string]string{"backend": "vxlan", "directrouting": "true"}},
		{"host-gw", map[string]string{"backend": "host-gw"}},
		{"udp", map[string]string{"backend": "udp"}},
		{"wireguard", map[string]string{"backend": "wireguard"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hosts.NewCluster(t, feltBin, 3)
			for _, h := range c.Hosts {
				testkit.MustRun(t, testkit.NetNSExec(h.NS, "iptables", "-P", "FORWARD", "DROP")...) // as Docker sets it
			}
			var ctrs []*hosts.Ctr
			for _, h := range c.Hosts {
				n := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16", Opts: tc.opts})
				ctrs = append(ctrs, n.MustRun(t, ""))
			}
			hosts.WaitAllPairs(t, ctrs)
			hosts.AllPairsPing(t, ctrs)
			hosts.Transfer(t, ctrs[0], ctrs[2], 2<<20)

			// Restart felt on host 1 (kill -9): same subnet, traffic kept.
			h := c.Hosts[1]
			before := ctrs[1].Net.Subnet
			h.Kill()
			if b := tc.opts["backend"]; b != "udp" && b != "wireguard" {
				// Kernel backends keep forwarding while felt is down; udp's
				// data path is felt itself, so it resumes after the restart.
				// So does wireguard's in user space (wireguard-go, as on
				// machines without the module); with the kernel module it
				// would keep forwarding, which this does not require.
				ctrs[0].MustPing(t, ctrs[1].Addr.Addr())
			}
			h.Start()
			ls, err := registryOf(t, c).Leases(context.Background(), netip.MustParsePrefix("10.42.0.0/16"))
			testkit.Must(t, err)
			held := 0
			for _, l := range ls {
				if l.Subnet == before {
					held++
				}
			}
			if held != 1 || len(ls) != 3 {
				t.Fatalf("after restart: leases %v, want 3 with %s still held", ls, before)
			}
			testkit.WaitFor(t, "traffic after the restart", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
			n2 := ctrs[1].Net
			d := n2.MustRun(t, "")
			if !before.Contains(d.Addr.Addr()) {
				t.Fatalf("new container on the restarted host got %s, outside its subnet %s", d.Addr, before)
			}
			testkit.WaitFor(t, "new container reachable", func() bool { return ctrs[2].Ping(d.Addr.Addr()) == nil })
			hosts.AllPairsPing(t, append(ctrs, d))
		})
	}
}

// backendCases are the default backend (no -o backend) and wireguard, for
// the tests that run for both: wireguard has its own device, peers and
// ports, where the others share their kernel paths.
var backendCases = []struct {
	name string
	opts map[string]string
}{
	{"default", nil},
	{"wireguard", map[string]string{"backend": "wireguard"}},
}

// withOpts is opts plus the key=value pairs kv, in a new map.
func withOpts(opts map[string]string, kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range opts {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// A host that dies without releasing its lease: once the lease expires its
// subnet's routes disappear from the other hosts.
func TestDeadHostLeaseExpires(t *testing.T) {
	for _, tc := range backendCases {
		t.Run(tc.name, func(t *testing.T) { testDeadHostLeaseExpires(t, tc.opts) })
	}
}

func testDeadHostLeaseExpires(t *testing.T, opts map[string]string) {
	c := hosts.NewCluster(t, feltBin, 3, "FELT_LEASE_TTL=4s")
	var nets []*hosts.Net
	for _, h := range c.Hosts {
		nets = append(nets, h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16", Opts: opts}))
	}
	dead := nets[2].Subnet
	route := func(h *hosts.Host) string {
		out, _ := testkit.Run("ip", "-n", h.NS, "route", "show", dead.String())
		return strings.TrimSpace(out)
	}
	testkit.WaitFor(t, "route to the third host's subnet", func() bool { return route(c.Hosts[0]) != "" && route(c.Hosts[1]) != "" })
	pool := netip.MustParsePrefix("10.42.0.0/16")
	var deadKey string // wireguard: the dead host's public key, a peer of the others until its lease expires
	if opts["backend"] == "wireguard" {
		deadKey = leaseKeys(t, c, pool)[dead]
		if !validKey(deadKey) {
			t.Fatalf("the third host's lease has no valid wgPublicKey: %q", deadKey)
		}
		testkit.WaitFor(t, "the third host a wireguard peer", func() bool {
			return slices.Contains(peerKeys(t, c.Hosts[0], pool), deadKey) && slices.Contains(peerKeys(t, c.Hosts[1], pool), deadKey)
		})
	}
	c.Hosts[2].Kill()
	testkit.WaitFor(t, "dead host's routes removed", func() bool { return route(c.Hosts[0]) == "" && route(c.Hosts[1]) == "" })
	if deadKey != "" {
		testkit.WaitFor(t, "dead host's wireguard peer removed", func() bool {
			return !slices.Contains(peerKeys(t, c.Hosts[0], pool), deadKey) && !slices.Contains(peerKeys(t, c.Hosts[1], pool), deadKey)
		})
	}
	// The expiry timer drops the routes when the lease ends; the live hosts
	// then delete the lease from the store, a moment later.
	reg := registryOf(t, c)
	var ls []lease.Lease
	testkit.WaitFor(t, "expired lease removed from Consul", func() bool {
		var err error
		ls, err = reg.Leases(context.Background(), pool)
		testkit.Must(t, err)
		return !slices.ContainsFunc(ls, func(l lease.Lease) bool { return l.Subnet == dead })
	})
	if len(ls) != 2 {
		t.Fatalf("leases %v: want the two live hosts' (renewed, not expired)", ls)
	}
}

// Two felt networks spanning two hosts: containers of one cannot reach the
// other's, across hosts, even with a default route through felt. (Two
// wireguard networks on a host need two ports: red gets its own.)
func TestIsolationAcrossHosts(t *testing.T) {
	for _, tc := range backendCases {
		t.Run(tc.name, func(t *testing.T) { testIsolationAcrossHosts(t, tc.opts) })
	}
}

func testIsolationAcrossHosts(t *testing.T, opts map[string]string) {
	c := hosts.NewCluster(t, feltBin, 2)
	redOpts := opts
	if opts["backend"] == "wireguard" {
		redOpts = withOpts(opts, "port", "51821")
	}
	var blue, red []*hosts.Ctr
	for _, h := range c.Hosts {
		b := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16", Opts: opts})
		r := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.43.0.0/16", Opts: redOpts})
		blue = append(blue, b.MustRun(t, ""))
		red = append(red, r.MustRun(t, ""))
	}
	for _, x := range append(blue, red...) {
		testkit.MustRun(t, "ip", "-n", x.NS, "route", "add", "default", "via", x.Net.Gateway.String())
	}
	testkit.WaitFor(t, "blue across hosts", func() bool { return blue[0].Ping(blue[1].Addr.Addr()) == nil })
	testkit.WaitFor(t, "red across hosts", func() bool { return red[0].Ping(red[1].Addr.Addr()) == nil })
	blue[0].MustNotPing(t, red[1].Addr.Addr())
	red[1].MustNotPing(t, blue[0].Addr.Addr())
	blue[1].MustNotPing(t, red[0].Addr.Addr())
}

// 20 simulated hosts acquiring leases in one pool at once, through Consul:
// each gets one, no two the same.
func TestConcurrentLeasesInConsul(t *testing.T) {
	c := hosts.NewCluster(t, feltBin, 0)
	leasetest.RaceAcquire(t, registryOf(t, c), netip.MustParsePrefix("10.70.0.0/19"), 20)
}

// Consul stops: existing traffic flows, new containers on hosts with a lease
// start, operations needing Consul fail naming its address; once Consul is
// back they succeed.
func TestConsulOutage(t *testing.T) {
	c := hosts.NewCluster(t, feltBin, 2)
	var nets []*hosts.Net
	var ctrs []*hosts.Ctr
	for _, h := range c.Hosts {
		n := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16"})
		nets = append(nets, n)
		ctrs = append(ctrs, n.MustRun(t, ""))
	}
	testkit.WaitFor(t, "cross-host ping", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	c.Consul.Stop()
	ctrs[0].MustPing(t, ctrs[1].Addr.Addr())
	late := nets[1].MustRun(t, "")
	ctrs[0].MustPing(t, late.Addr.Addr())

	// A host restarting while Consul is down still starts and serves.
	c.Hosts[0].Kill()
	c.Hosts[0].Start()
	ctrs[0].MustPing(t, ctrs[1].Addr.Addr())
	_, err := c.Hosts[0].CreateNetwork(hosts.NetSpec{Subnet: "10.43.0.0/16"})
	testkit.WantErr(t, err, c.Consul.Addr)

	c.Consul.Restart()
	testkit.WaitFor(t, "network creation once Consul is back", func() bool {
		n, err := c.Hosts[0].CreateNetwork(hosts.NetSpec{Subnet: "10.43.0.0/16"})
		if err == nil {
			t.Cleanup(func() { _ = n.Delete() })
		}
		return err == nil
	})
	hosts.AllPairsPing(t, append(ctrs, late))
}

// A host whose public IP changes updates its lease in place (same subnet),
// and peers follow: traffic flows again without restarting anything.
func TestPublicIPChange(t *testing.T) {
	c := hosts.NewCluster(t, feltBin, 2)
	var ctrs []*hosts.Ctr
	for _, h := range c.Hosts {
		ctrs = append(ctrs, h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16"}).MustRun(t, ""))
	}
	testkit.WaitFor(t, "cross-host ping", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	h := c.Hosts[1]
	testkit.MustRun(t, "ip", "-n", h.NS, "addr", "del", h.IP+"/24", "dev", "ul0")
	testkit.MustRun(t, "ip", "-n", h.NS, "addr", "add", "192.168.77.42/24", "dev", "ul0")
	subnet := ctrs[1].Net.Subnet
	testkit.WaitFor(t, "lease updated with the new IP", func() bool {
		ls, err := registryOf(t, c).Leases(context.Background(), netip.MustParsePrefix("10.42.0.0/16"))
		if err != nil {
			return false
		}
		for _, l := range ls {
			if l.Subnet == subnet {
				return l.PublicIP.String() == "192.168.77.42"
			}
		}
		return false
	})
	testkit.WaitFor(t, "traffic over the new address", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	ctrs[1].MustPing(t, ctrs[0].Addr.Addr())
}

// host-gw with a peer that is not on this host's L2 segment: network
// creation fails naming the peer, instead of black-holing its subnet.
func TestHostGWUnreachablePeer(t *testing.T) {
	c := hosts.NewCluster(t, feltBin, 1)
	c.Hosts[0].MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16", Opts: map[string]string{"backend": "host-gw"}})
	far := c.AddHostAt("192.168.78.11/24")
	_, err := far.CreateNetwork(hosts.NetSpec{Subnet: "10.42.0.0/16"})
	testkit.WantErr(t, err, "at "+c.Hosts[0].IP+" is not directly reachable")
	testkit.WantErr(t, err, "one L2 segment")
	if links := hosts.FeltLinks(t, far.NS); len(links) > 0 {
		t.Fatalf("failed create left links: %v", links)
	}
}

// The store loses every felt key (a Consul rebuilt from scratch): hosts
// write their network records and leases back, with the options they run
// with and the same subnets, and traffic across hosts resumes.
func TestStoreDataLossHeals(t *testing.T) {
	c := hosts.NewCluster(t, feltBin, 2)
	var ctrs []*hosts.Ctr
	for _, h := range c.Hosts {
		ctrs = append(ctrs, h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16", Opts: map[string]string{"backend": "host-gw"}}).MustRun(t, ""))
	}
	testkit.WaitFor(t, "cross-host ping", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	reg := registryOf(t, c)
	ctx := context.Background()
	pool := netip.MustParsePrefix("10.42.0.0/16")
	// The network record and both leases at least.
	if n, err := reg.DeleteAll(ctx); err != nil || n < 3 {
		t.Fatalf("deleted %d keys (%v), want the network record and both leases", n, err)
	}
	testkit.WaitFor(t, "records and leases written back", func() bool {
		n, err := reg.GetNetwork(ctx, pool)
		if err != nil || n.Backend != "host-gw" {
			return false
		}
		ls, err := reg.Leases(ctx, pool)
		if err != nil || len(ls) != 2 {
			return false
		}
		for i, l := range ls {
			if l.Subnet != ctrs[0].Net.Subnet && l.Subnet != ctrs[1].Net.Subnet {
				t.Fatalf("lease %d came back as %s, not the subnet its host holds", i, l.Subnet)
			}
		}
		return true
	})
	testkit.WaitFor(t, "traffic after the store healed", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
}
