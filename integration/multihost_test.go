package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/internal/testconsul"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
)

// Cluster is several felt hosts on one underlay: a bridge in its own
// namespace, which also runs Consul.
type Cluster struct {
	t      *testing.T
	UL     string // underlay namespace
	Consul *testconsul.Agent
	Hosts  []*Host
	env    []string
}

const underlayGW = "192.168.77.1"

func newCluster(t *testing.T, hosts int, env ...string) *Cluster {
	t.Helper()
	c := &Cluster{t: t, UL: newNS(t, "ul")}
	run(t, "ip", "-n", c.UL, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", c.UL, "addr", "add", underlayGW+"/24", "dev", "br0")
	run(t, "ip", "-n", c.UL, "addr", "add", "192.168.78.1/24", "dev", "br0") // a second subnet on the segment
	run(t, "ip", "-n", c.UL, "link", "set", "br0", "up")
	c.Consul = testconsul.Start(t, testconsul.Options{NetNS: c.UL, Bind: underlayGW, Client: underlayGW, Persistent: true})
	c.env = append([]string{"CONSUL_HTTP_ADDR=" + c.Consul.Addr}, env...)
	for range hosts {
		c.AddHost()
	}
	return c
}

// AddHost starts one more felt host on the underlay.
func (c *Cluster) AddHost() *Host {
	c.t.Helper()
	return c.AddHostAt(fmt.Sprintf("192.168.77.%d/24", 11+len(c.Hosts)))
}

// AddHostAt starts a felt host with the given underlay address (CIDR).
func (c *Cluster) AddHostAt(addr string) *Host {
	c.t.Helper()
	h := newHost(c.t, HostOptions{UnderlayNS: c.UL, UnderlayBridge: "br0", Addr: addr, Env: c.env})
	gw := netip.MustParsePrefix(addr).Masked().Addr().Next() // the underlay's address in this host's subnet
	run(c.t, "ip", "-n", h.NS, "route", "add", "default", "via", gw.String())
	c.Hosts = append(c.Hosts, h)
	return h
}

// Registry reads the leases in Consul directly, as a check on the hosts.
func (c *Cluster) Registry() *lease.Registry {
	cfg := consulapi.DefaultConfig()
	cfg.Address = c.Consul.Addr
	ns, err := netns.GetFromName(c.UL)
	must(c.t, err)
	c.t.Cleanup(func() { ns.Close() })
	// Consul listens inside the underlay namespace: dial from there. A
	// socket stays in the namespace it was created in.
	cfg.Transport = &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := nsutil.Do(ns, func() (err error) {
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}}
	s, err := consulkv.New(cfg)
	must(c.t, err)
	return lease.NewRegistry(s, "felt/", nil)
}

// transfer sends size random bytes from one container to another over TCP
// and checks they arrived intact. The sockets are made inside the container
// namespaces (a socket stays in the namespace it was created in).
func transfer(t testing.TB, from, to *Ctr, size int) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	var ln net.Listener
	must(t, inNetNS(t, to.NS, func() (err error) { ln, err = net.Listen("tcp", to.Addr.Addr().String()+":5001"); return err }))
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	var conn net.Conn
	must(t, inNetNS(t, from.NS, func() (err error) {
		conn, err = net.DialTimeout("tcp", to.Addr.Addr().String()+":5001", 5*time.Second)
		return err
	}))
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(data); err != nil {
		t.Fatalf("TCP transfer %s -> %s: %v", from.Addr, to.Addr, err)
	}
	conn.Close()
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("TCP transfer %s -> %s: received %d bytes, sent %d, or content differs", from.Addr, to.Addr, len(b), size)
	}
}

// inNetNS runs fn with the calling thread in the named namespace.
func inNetNS(t testing.TB, name string, fn func() error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return err
	}
	defer ns.Close()
	return nsutil.Do(ns, fn)
}

func allPairsPing(t testing.TB, ctrs []*Ctr) {
	t.Helper()
	for _, a := range ctrs {
		for _, b := range ctrs {
			if a != b {
				a.mustPing(t, b.Addr.Addr())
			}
		}
	}
}

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
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 3)
			for _, h := range c.Hosts {
				run(t, inNS(h.NS, "iptables", "-P", "FORWARD", "DROP")...) // as Docker sets it
			}
			var ctrs []*Ctr
			for _, h := range c.Hosts {
				n := h.mustNetwork(t, NetSpec{Subnet: "10.42.0.0/16", Opts: tc.opts})
				ctrs = append(ctrs, n.mustRun(t, ""))
			}
			waitFor(t, "all pairs reachable", func() bool {
				for _, a := range ctrs {
					for _, b := range ctrs {
						if a != b && a.Ping(b.Addr.Addr()) != nil {
							return false
						}
					}
				}
				return true
			})
			allPairsPing(t, ctrs)
			transfer(t, ctrs[0], ctrs[2], 2<<20)

			// Restart felt on host 1 (kill -9): same subnet, traffic kept.
			h := c.Hosts[1]
			before := ctrs[1].Net.Subnet
			h.Kill()
			ctrs[0].mustPing(t, ctrs[1].Addr.Addr())
			h.Start()
			ls, err := c.Registry().Leases(context.Background(), netip.MustParsePrefix("10.42.0.0/16"))
			must(t, err)
			held := 0
			for _, l := range ls {
				if l.Subnet == before {
					held++
				}
			}
			if held != 1 || len(ls) != 3 {
				t.Fatalf("after restart: leases %v, want 3 with %s still held", ls, before)
			}
			n2 := ctrs[1].Net
			d := n2.mustRun(t, "")
			if !before.Contains(d.Addr.Addr()) {
				t.Fatalf("new container on the restarted host got %s, outside its subnet %s", d.Addr, before)
			}
			waitFor(t, "new container reachable", func() bool { return ctrs[2].Ping(d.Addr.Addr()) == nil })
			allPairsPing(t, append(ctrs, d))
		})
	}
}

// A host that dies without releasing its lease: once the lease expires its
// subnet's routes disappear from the other hosts.
func TestDeadHostLeaseExpires(t *testing.T) {
	c := newCluster(t, 3, "FELT_LEASE_TTL=4s")
	var nets []*Net
	for _, h := range c.Hosts {
		nets = append(nets, h.mustNetwork(t, NetSpec{Subnet: "10.42.0.0/16"}))
	}
	dead := nets[2].Subnet
	route := func(h *Host) string {
		out, _ := try("ip", "-n", h.NS, "route", "show", dead.String())
		return strings.TrimSpace(out)
	}
	waitFor(t, "route to the third host's subnet", func() bool { return route(c.Hosts[0]) != "" && route(c.Hosts[1]) != "" })
	c.Hosts[2].Kill()
	waitFor(t, "dead host's routes removed", func() bool { return route(c.Hosts[0]) == "" && route(c.Hosts[1]) == "" })
	ls, err := c.Registry().Leases(context.Background(), netip.MustParsePrefix("10.42.0.0/16"))
	must(t, err)
	for _, l := range ls {
		if l.Subnet == dead {
			t.Fatalf("expired lease %s still in Consul", dead)
		}
	}
	if len(ls) != 2 {
		t.Fatalf("leases %v: want the two live hosts' (renewed, not expired)", ls)
	}
}

// Two felt networks spanning two hosts: containers of one cannot reach the
// other's, across hosts, even with a default route through felt.
func TestIsolationAcrossHosts(t *testing.T) {
	c := newCluster(t, 2)
	var blue, red []*Ctr
	for _, h := range c.Hosts {
		b := h.mustNetwork(t, NetSpec{Subnet: "10.42.0.0/16"})
		r := h.mustNetwork(t, NetSpec{Subnet: "10.43.0.0/16"})
		blue = append(blue, b.mustRun(t, ""))
		red = append(red, r.mustRun(t, ""))
	}
	for _, x := range append(blue, red...) {
		run(t, "ip", "-n", x.NS, "route", "add", "default", "via", x.Net.Gateway.String())
	}
	waitFor(t, "blue across hosts", func() bool { return blue[0].Ping(blue[1].Addr.Addr()) == nil })
	waitFor(t, "red across hosts", func() bool { return red[0].Ping(red[1].Addr.Addr()) == nil })
	blue[0].mustNotPing(t, red[1].Addr.Addr())
	red[1].mustNotPing(t, blue[0].Addr.Addr())
	blue[1].mustNotPing(t, red[0].Addr.Addr())
}

// 20 simulated hosts acquiring leases in one pool at once, through Consul:
// each gets one, no two the same.
func TestConcurrentLeasesInConsul(t *testing.T) {
	c := newCluster(t, 0)
	reg := c.Registry()
	ctx := context.Background()
	pool := netip.MustParsePrefix("10.70.0.0/19")
	n, err := reg.EnsureNetwork(ctx, lease.Spec{Pool: pool}, true)
	must(t, err)
	const hosts = 20
	got := make([]netip.Prefix, hosts)
	errs := make([]error, hosts)
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := reg.Acquire(ctx, lease.AcquireRequest{Network: n, TTL: time.Hour,
				Owner: lease.Owner{HostID: fmt.Sprintf("sim-%d", i), PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})}})
			got[i], errs[i] = l.Subnet, err
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i, s := range got {
		must(t, errs[i])
		if j, dup := seen[s]; dup {
			t.Fatalf("simulated hosts %d and %d both hold %s", j, i, s)
		}
		seen[s] = i
	}
	ls, err := reg.Leases(ctx, pool)
	must(t, err)
	if len(ls) != hosts {
		t.Fatalf("%d leases in Consul, want %d", len(ls), hosts)
	}
}

// Consul stops: existing traffic flows, new containers on hosts with a lease
// start, operations needing Consul fail naming its address; once Consul is
// back they succeed.
func TestConsulOutage(t *testing.T) {
	c := newCluster(t, 2)
	var nets []*Net
	var ctrs []*Ctr
	for _, h := range c.Hosts {
		n := h.mustNetwork(t, NetSpec{Subnet: "10.42.0.0/16"})
		nets = append(nets, n)
		ctrs = append(ctrs, n.mustRun(t, ""))
	}
	waitFor(t, "cross-host ping", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	c.Consul.Stop()
	ctrs[0].mustPing(t, ctrs[1].Addr.Addr())
	late := nets[1].mustRun(t, "")
	ctrs[0].mustPing(t, late.Addr.Addr())

	// A host restarting while Consul is down still starts and serves.
	c.Hosts[0].Kill()
	c.Hosts[0].Start()
	ctrs[0].mustPing(t, ctrs[1].Addr.Addr())
	_, err := c.Hosts[0].CreateNetwork(NetSpec{Subnet: "10.43.0.0/16"})
	wantErr(t, err, c.Consul.Addr)

	c.Consul.Restart()
	waitFor(t, "network creation once Consul is back", func() bool {
		n, err := c.Hosts[0].CreateNetwork(NetSpec{Subnet: "10.43.0.0/16"})
		if err == nil {
			t.Cleanup(func() { _ = n.Delete() })
		}
		return err == nil
	})
	allPairsPing(t, append(ctrs, late))
}

// A host whose public IP changes updates its lease in place (same subnet),
// and peers follow: traffic flows again without restarting anything.
func TestPublicIPChange(t *testing.T) {
	c := newCluster(t, 2)
	var ctrs []*Ctr
	for _, h := range c.Hosts {
		ctrs = append(ctrs, h.mustNetwork(t, NetSpec{Subnet: "10.42.0.0/16"}).mustRun(t, ""))
	}
	waitFor(t, "cross-host ping", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	h := c.Hosts[1]
	run(t, "ip", "-n", h.NS, "addr", "del", h.IP+"/24", "dev", "ul0")
	run(t, "ip", "-n", h.NS, "addr", "add", "192.168.77.42/24", "dev", "ul0")
	subnet := ctrs[1].Net.Subnet
	waitFor(t, "lease updated with the new IP", func() bool {
		ls, err := c.Registry().Leases(context.Background(), netip.MustParsePrefix("10.42.0.0/16"))
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
	waitFor(t, "traffic over the new address", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	ctrs[1].mustPing(t, ctrs[0].Addr.Addr())
}

// host-gw with a peer that is not on this host's L2 segment: network
// creation fails naming the peer, instead of black-holing its subnet.
func TestHostGWUnreachablePeer(t *testing.T) {
	c := newCluster(t, 1)
	c.Hosts[0].mustNetwork(t, NetSpec{Subnet: "10.42.0.0/16", Opts: map[string]string{"backend": "host-gw"}})
	far := c.AddHostAt("192.168.78.11/24")
	_, err := far.CreateNetwork(NetSpec{Subnet: "10.42.0.0/16"})
	wantErr(t, err, "at "+c.Hosts[0].IP+" is not directly reachable")
	wantErr(t, err, "one L2 segment")
	if links := feltLinks(t, far.NS); len(links) > 0 {
		t.Fatalf("failed create left links: %v", links)
	}
}
