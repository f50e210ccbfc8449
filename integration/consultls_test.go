package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/testkit/consul"
	"github.com/felt-net/felt/testkit/hosts"
)

// tlsUnderlayGW is the underlay bridge's address, where Consul listens.
const tlsUnderlayGW = "192.168.77.1"

// tlsCluster is an underlay namespace with a bridge and a Consul locked down
// as in production on it: HTTPS only, client certificates verified
// (verify_incoming), ACLs with default deny. hosts.NewCluster's Consul is
// plain HTTP, hence this one.
type tlsCluster struct {
	UL     string
	Consul *consul.Agent
	// Env is what a felt host needs: the https:// address, the CA, a client
	// certificate and a token that may write felt's prefix only.
	Env []string
}

func newTLSCluster(t *testing.T) *tlsCluster {
	t.Helper()
	c := &tlsCluster{UL: hosts.NewNS(t, "ul")}
	// A fixed MAC for the bridge, as hosts.NewCluster explains.
	hosts.Run(t, "ip", "-n", c.UL, "link", "add", "br0", "address", "02:fe:17:00:00:01", "type", "bridge")
	hosts.Run(t, "ip", "-n", c.UL, "addr", "add", tlsUnderlayGW+"/24", "dev", "br0")
	hosts.Run(t, "ip", "-n", c.UL, "link", "set", "br0", "up")
	c.Consul = consul.Start(t, consul.Options{NetNS: c.UL, Bind: tlsUnderlayGW, Client: tlsUnderlayGW,
		Persistent: true, TLS: true, ACL: true})
	token := c.Consul.CreateToken("felt", `key_prefix "felt/" { policy = "write" }`)
	c.Env = setEnv(c.Consul.ClientEnv(), "CONSUL_HTTP_TOKEN="+token)
	return c
}

// addHost starts felt on the underlay at 192.168.77.n with env.
func (c *tlsCluster) addHost(t *testing.T, n int, env []string) *hosts.Host {
	t.Helper()
	h := hosts.NewHost(t, hosts.HostOptions{Binary: feltBin, UnderlayNS: c.UL, UnderlayBridge: "br0",
		Addr: fmt.Sprintf("192.168.77.%d/24", n), Env: env})
	hosts.Run(t, "ip", "-n", h.NS, "route", "add", "default", "via", tlsUnderlayGW)
	return h
}

// registry reads leases from Consul as the test's own client: through the
// underlay namespace, with the CA, the client certificate and the
// management token.
func (c *tlsCluster) registry(t *testing.T) *lease.Registry {
	t.Helper()
	ns, err := netns.GetFromName(c.UL)
	hosts.Must(t, err)
	t.Cleanup(func() { ns.Close() })
	cfg := &consulapi.Config{Address: c.Consul.Addr, Scheme: "https", Token: c.Consul.Token,
		TLSConfig: consulapi.TLSConfig{CAFile: c.Consul.TLS.CA.CertFile, CertFile: c.Consul.TLS.ClientCert, KeyFile: c.Consul.TLS.ClientKey},
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := nsutil.Do(ns, func() (err error) {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}}}
	s, err := consulkv.New(cfg)
	hosts.Must(t, err)
	return lease.NewRegistry(s, "felt/", nil)
}

// setEnv returns env with the NAME=value entries replacing those of the
// same name ("NAME=" empties it, which Consul's client takes as unset).
func setEnv(env []string, set ...string) []string {
	out := append([]string{}, env...)
	for _, s := range set {
		name, _, _ := strings.Cut(s, "=")
		replaced := false
		for i, e := range out {
			if strings.HasPrefix(e, name+"=") {
				out[i], replaced = s, true
			}
		}
		if !replaced {
			out = append(out, s)
		}
	}
	return out
}

// felt as a bare binary against a Consul that serves HTTPS only, checks
// client certificates and denies by default: two hosts lease subnets
// through it and their containers reach each other.
func TestConsulTLSAndACLs(t *testing.T) {
	c := newTLSCluster(t)
	pool := netip.MustParsePrefix("10.44.0.0/16")
	var ctrs []*hosts.Ctr
	for i := range 2 {
		h := c.addHost(t, 11+i, c.Env)
		ctrs = append(ctrs, h.MustNetwork(t, hosts.NetSpec{Subnet: pool.String()}).MustRun(t, ""))
	}
	if ctrs[0].Net.Subnet == ctrs[1].Net.Subnet {
		t.Fatalf("both hosts got %s", ctrs[0].Net.Subnet)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ls, err := c.registry(t).Leases(ctx, pool)
	hosts.Must(t, err)
	got := map[netip.Prefix]string{}
	for _, l := range ls {
		got[l.Subnet] = l.PublicIP.String()
	}
	if len(ls) != 2 || got[ctrs[0].Net.Subnet] != "192.168.77.11" || got[ctrs[1].Net.Subnet] != "192.168.77.12" {
		t.Fatalf("leases in Consul %+v: want %s for 192.168.77.11 and %s for 192.168.77.12", ls, ctrs[0].Net.Subnet, ctrs[1].Net.Subnet)
	}
	hosts.WaitFor(t, "cross-host ping", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	ctrs[1].MustPing(t, ctrs[0].Addr.Addr())
}

// A felt host whose Consul settings are wrong answers Docker's calls with
// an error that names the setting to fix, and writes nothing.
func TestConsulTLSAndACLErrors(t *testing.T) {
	c := newTLSCluster(t)
	other := consul.NewCA(t, t.TempDir(), "other-ca")
	h := c.addHost(t, 21, c.Env)
	base := h.Env
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"wrong CA", []string{"CONSUL_CACERT=" + other.CertFile}, "not signed by the CA in CONSUL_CACERT=" + other.CertFile},
		{"no client certificate", []string{"CONSUL_CLIENT_CERT=", "CONSUL_CLIENT_KEY="}, "requires a client certificate: set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"},
		{"no token", []string{"CONSUL_HTTP_TOKEN="}, "no token (CONSUL_HTTP_TOKEN is empty)"},
		{"no TLS", []string{"CONSUL_HTTP_ADDR=http://" + c.Consul.Addr}, "set CONSUL_HTTP_SSL=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.Stop()
			h.Env = setEnv(base, tc.set...)
			h.Start()
			_, err := h.CreateNetwork(hosts.NetSpec{Subnet: "10.45.0.0/16"})
			t.Logf("CreateNetwork: %v", err) // what Docker would show
			hosts.WantErr(t, err, tc.want)
			hosts.WantErr(t, err, "consul "+c.Consul.Addr)
		})
	}
	// Nothing of those attempts reached Consul.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ls, err := c.registry(t).Leases(ctx, netip.MustParsePrefix("10.45.0.0/16"))
	hosts.Must(t, err)
	if len(ls) != 0 {
		t.Fatalf("leases %+v written by misconfigured hosts", ls)
	}
	// With the settings right again, the same host works.
	h.Stop()
	h.Env = base
	h.Start()
	h.MustNetwork(t, hosts.NetSpec{Subnet: "10.45.0.0/16"})
}
