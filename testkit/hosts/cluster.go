package hosts

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
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
	env    []string
}

const underlayGW = "192.168.77.1"

// NewCluster starts Consul on a fresh underlay and hosts felt hosts running
// binary, with env added to each host's environment.
func NewCluster(t testing.TB, binary string, hosts int, env ...string) *Cluster {
	t.Helper()
	c := &Cluster{t: t, UL: NewNS(t, "ul"), Binary: binary}
	// A fixed MAC: otherwise the bridge takes its lowest port's, and it
	// changes when a host leaves, stalling everyone's traffic to Consul on
	// the underlay gateway while their neighbour entries go stale.
	Run(t, "ip", "-n", c.UL, "link", "add", "br0", "address", "02:fe:17:00:00:01", "type", "bridge")
	Run(t, "ip", "-n", c.UL, "addr", "add", underlayGW+"/24", "dev", "br0")
	Run(t, "ip", "-n", c.UL, "addr", "add", "192.168.78.1/24", "dev", "br0") // a second subnet on the segment
	Run(t, "ip", "-n", c.UL, "link", "set", "br0", "up")
	c.Consul = consul.Start(t, consul.Options{NetNS: c.UL, Bind: underlayGW, Client: underlayGW, Persistent: true})
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
	h := NewHost(c.t, HostOptions{Binary: c.Binary, UnderlayNS: c.UL, UnderlayBridge: "br0", Addr: addr, Env: c.env})
	gw := netip.MustParsePrefix(addr).Masked().Addr().Next() // the underlay's address in this host's subnet
	Run(c.t, "ip", "-n", h.NS, "route", "add", "default", "via", gw.String())
	c.Hosts = append(c.Hosts, h)
	return h
}

// Registry reads the leases in Consul directly, as a check on the hosts.
func (c *Cluster) Registry() *lease.Registry {
	cfg := consulapi.DefaultConfig()
	cfg.Address = c.Consul.Addr
	ns, err := netns.GetFromName(c.UL)
	Must(c.t, err)
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
	Must(c.t, err)
	return lease.NewRegistry(s, "felt/", nil)
}

// transfer sends size random bytes from one container to another over TCP
// and checks they arrived intact. The sockets are made inside the container
// namespaces (a socket stays in the namespace it was created in).
func Transfer(t testing.TB, from, to *Ctr, size int) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	var ln net.Listener
	Must(t, InNetNS(t, to.NS, func() (err error) { ln, err = net.Listen("tcp", to.Addr.Addr().String()+":5001"); return err }))
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
	Must(t, InNetNS(t, from.NS, func() (err error) {
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
func InNetNS(t testing.TB, name string, fn func() error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return err
	}
	defer ns.Close()
	return nsutil.Do(ns, fn)
}

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
