package hosts

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
)

// Cluster is several felt hosts on one underlay: a bridge in its own
// namespace, which also runs Consul.
type Cluster struct {
	t      testing.TB
	UL     string // underlay namespace
	Binary string
	Consul *consul.Agent
	Hosts  []*Host
	// Env is added to the environment of each host AddHost starts: Consul's
	// client settings, then ClusterOptions.Env.
	Env []string
}

// ClusterOptions configure NewClusterWith.
type ClusterOptions struct {
	Binary string   // the felt binary the hosts run (BuildFelt)
	Hosts  int      // hosts started at once; AddHost adds more
	Env    []string // added to each host's environment
	// Secure locks Consul down as production should: HTTPS only, client
	// certificates verified (verify_incoming), ACLs with default deny.
	// Hosts then get the CA, a client certificate and a token that may
	// write felt's prefix only.
	Secure bool
	// ConsulArgs are added to Consul's command line (e.g. -hcl settings).
	ConsulArgs []string
}

// UnderlayGW is the underlay bridge's address, where Consul listens; host
// n of a cluster is 192.168.77.(10+n).
const UnderlayGW = "192.168.77.1"

// NewCluster starts Consul on a fresh underlay and hosts felt hosts running
// binary, with env added to each host's environment.
func NewCluster(t testing.TB, binary string, hosts int, env ...string) *Cluster {
	t.Helper()
	return NewClusterWith(t, ClusterOptions{Binary: binary, Hosts: hosts, Env: env})
}

// NewClusterWith is NewCluster with every option.
func NewClusterWith(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	c := &Cluster{t: t, UL: NewNS(t, "ul"), Binary: o.Binary}
	// A fixed MAC: otherwise the bridge takes its lowest port's, and it
	// changes when a host leaves, stalling everyone's traffic to Consul on
	// the underlay gateway while their neighbour entries go stale.
	testkit.MustRun(t, "ip", "-n", c.UL, "link", "add", "br0", "address", "02:fe:17:00:00:01", "type", "bridge")
	testkit.MustRun(t, "ip", "-n", c.UL, "addr", "add", UnderlayGW+"/24", "dev", "br0")
	testkit.MustRun(t, "ip", "-n", c.UL, "addr", "add", "192.168.78.1/24", "dev", "br0") // a second subnet on the segment
	testkit.MustRun(t, "ip", "-n", c.UL, "link", "set", "br0", "up")
	if o.Secure {
		c.Consul = consul.Start(t, consul.Options{NetNS: c.UL, Bind: UnderlayGW, Client: UnderlayGW,
			Persistent: true, TLS: true, ACL: true, Args: o.ConsulArgs})
		token := c.Consul.CreateToken("felt", `key_prefix "felt/" { policy = "write" }`)
		c.Env = testkit.SetEnv(c.Consul.ClientEnv(), "CONSUL_HTTP_TOKEN="+token)
	} else {
		c.Consul = consul.Start(t, consul.Options{NetNS: c.UL, Bind: UnderlayGW, Client: UnderlayGW, Persistent: true, Args: o.ConsulArgs})
		c.Env = []string{"CONSUL_HTTP_ADDR=" + c.Consul.Addr}
	}
	c.Env = append(c.Env, o.Env...)
	for range o.Hosts {
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
	h := NewHost(c.t, HostOptions{Binary: c.Binary, UnderlayNS: c.UL, UnderlayBridge: "br0", Addr: addr, Env: c.Env})
	gw := netip.MustParsePrefix(addr).Masked().Addr().Next() // the underlay's address in this host's subnet
	testkit.MustRun(c.t, "ip", "-n", h.NS, "route", "add", "default", "via", gw.String())
	c.Hosts = append(c.Hosts, h)
	return h
}

// ConsulConfig is the configuration of a client of the cluster's Consul
// with every right (consul.Agent.APIConfig), for a test to check what the
// hosts stored. Consul listens inside the underlay namespace, so the client
// dials from there (testkit.NetNSTransport).
func (c *Cluster) ConsulConfig() *consulapi.Config {
	cfg := c.Consul.APIConfig()
	cfg.Transport = testkit.NetNSTransport(c.UL)
	return cfg
}

// Transfer sends size random bytes from one container to another over TCP
// and checks they arrived intact. The sockets are made inside the container
// namespaces (a socket stays in the namespace it was created in).
func Transfer(t testing.TB, from, to *Ctr, size int) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	TransferData(t, from, to, data)
}

// TransferData is Transfer with the bytes given: a test looking for them
// on the wire (that they are not there in clear) chooses them.
func TransferData(t testing.TB, from, to *Ctr, data []byte) {
	t.Helper()
	size := len(data)
	var ln net.Listener
	testkit.Must(t, InNetNS(t, to.NS, func() (err error) { ln, err = net.Listen("tcp", to.Addr.Addr().String()+":5001"); return err }))
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
	testkit.Must(t, InNetNS(t, from.NS, func() (err error) {
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

// InNetNS runs fn with the calling thread in the named namespace.
func InNetNS(t testing.TB, name string, fn func() error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return err
	}
	defer ns.Close()
	return nsutil.Do(ns, fn)
}

// WaitAllPairs waits (testkit.WaitFor) until every container reaches every
// other: the overlay has converged.
func WaitAllPairs(t testing.TB, ctrs []*Ctr) {
	t.Helper()
	testkit.WaitFor(t, "all pairs reachable", func() bool {
		for _, a := range ctrs {
			for _, b := range ctrs {
				if a != b && a.Ping(b.Addr.Addr()) != nil {
					return false
				}
			}
		}
		return true
	})
}

// AllPairsPing fails t unless every container reaches every other.
func AllPairsPing(t testing.TB, ctrs []*Ctr) {
	t.Helper()
	for _, a := range ctrs {
		for _, b := range ctrs {
			if a != b {
				a.MustPing(t, b.Addr.Addr())
			}
		}
	}
}
