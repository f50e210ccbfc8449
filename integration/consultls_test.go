package integration

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
	"github.com/felt-net/felt/testkit/hosts"
)

// newTLSCluster is an underlay with a Consul locked down as in production
// (HTTPS only, client certificates verified, ACLs with default deny) and no
// hosts yet; c.Env is what a felt host needs: the https:// address, the CA,
// a client certificate and a token that may write felt's prefix only.
func newTLSCluster(t *testing.T) *hosts.Cluster {
	t.Helper()
	return hosts.NewClusterWith(t, hosts.ClusterOptions{Binary: feltBin, Secure: true})
}

// addHost starts felt on the underlay at 192.168.77.n.
func addHost(c *hosts.Cluster, n int) *hosts.Host {
	return c.AddHostAt(fmt.Sprintf("192.168.77.%d/24", n))
}

// felt as a bare binary against a Consul that serves HTTPS only, checks
// client certificates and denies by default: two hosts lease subnets
// through it and their containers reach each other.
func TestConsulTLSAndACLs(t *testing.T) {
	c := newTLSCluster(t)
	pool := netip.MustParsePrefix("10.44.0.0/16")
	var ctrs []*hosts.Ctr
	for i := range 2 {
		h := addHost(c, 11+i)
		ctrs = append(ctrs, h.MustNetwork(t, hosts.NetSpec{Subnet: pool.String()}).MustRun(t, ""))
	}
	if ctrs[0].Net.Subnet == ctrs[1].Net.Subnet {
		t.Fatalf("both hosts got %s", ctrs[0].Net.Subnet)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ls, err := registryOf(t, c).Leases(ctx, pool)
	testkit.Must(t, err)
	got := map[netip.Prefix]string{}
	for _, l := range ls {
		got[l.Subnet] = l.PublicIP.String()
	}
	if len(ls) != 2 || got[ctrs[0].Net.Subnet] != "192.168.77.11" || got[ctrs[1].Net.Subnet] != "192.168.77.12" {
		t.Fatalf("leases in Consul %+v: want %s for 192.168.77.11 and %s for 192.168.77.12", ls, ctrs[0].Net.Subnet, ctrs[1].Net.Subnet)
	}
	testkit.WaitFor(t, "cross-host ping", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	ctrs[1].MustPing(t, ctrs[0].Addr.Addr())
}

// A felt host whose Consul settings are wrong answers Docker's calls with
// an error that names the setting to fix, and writes nothing.
func TestConsulTLSAndACLErrors(t *testing.T) {
	c := newTLSCluster(t)
	other := consul.NewCA(t, t.TempDir(), "other-ca")
	h := addHost(c, 21)
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
			h.Env = testkit.SetEnv(base, tc.set...)
			h.Start()
			_, err := h.CreateNetwork(hosts.NetSpec{Subnet: "10.45.0.0/16"})
			t.Logf("CreateNetwork: %v", err) // what Docker would show
			testkit.WantErr(t, err, tc.want)
			testkit.WantErr(t, err, "consul "+c.Consul.Addr)
		})
	}
	// Nothing of those attempts reached Consul.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ls, err := registryOf(t, c).Leases(ctx, netip.MustParsePrefix("10.45.0.0/16"))
	testkit.Must(t, err)
	if len(ls) != 0 {
		t.Fatalf("leases %+v written by misconfigured hosts", ls)
	}
	// With the settings right again, the same host works.
	h.Stop()
	h.Env = base
	h.Start()
	h.MustNetwork(t, hosts.NetSpec{Subnet: "10.45.0.0/16"})
}
