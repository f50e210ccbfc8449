package integration

import (
	"net/netip"
	"strings"
	"testing"

	netapi "github.com/docker/go-plugins-helpers/network"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// Two containers on one felt network reach each other; a container of
// another felt network on the same host does not, even with a route to it
// and with the FORWARD policy ACCEPT; Docker's FORWARD DROP does not block
// felt's own traffic.
func TestSingleHostConnectivityAndIsolation(t *testing.T) {
	h := hosts.NewHost(t, hosts.HostOptions{Binary: feltBin})
	testkit.MustRun(t, testkit.NetNSExec(h.NS, "iptables", "-P", "FORWARD", "DROP")...) // as Docker sets it
	blue := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16"})
	red := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.43.0.0/16", Opts: map[string]string{"backend": "host-gw"}})
	a := blue.MustRun(t, "")
	b := blue.MustRun(t, "")
	c := red.MustRun(t, "")

	if !blue.Subnet.Contains(a.Addr.Addr()) || a.Addr.Bits() != blue.Subnet.Bits() {
		t.Fatalf("address %s is not on the host subnet %s", a.Addr, blue.Subnet)
	}
	a.MustPing(t, b.Addr.Addr())
	a.MustPing(t, blue.Gateway)
	// A route to the other network through the felt gateway; the firewall
	// must drop what the routing table would deliver.
	testkit.MustRun(t, "ip", "-n", a.NS, "route", "add", "default", "via", blue.Gateway.String())
	testkit.MustRun(t, "ip", "-n", c.NS, "route", "add", "default", "via", red.Gateway.String())
	a.MustNotPing(t, c.Addr.Addr())
	testkit.MustRun(t, testkit.NetNSExec(h.NS, "iptables", "-P", "FORWARD", "ACCEPT")...)
	a.MustNotPing(t, c.Addr.Addr())
	c.MustNotPing(t, a.Addr.Addr())

	// MTU on the bridge and both veth ends: dummy underlay 1500 - vxlan 50.
	out := testkit.MustRun(t, "ip", "-n", a.NS, "link", "show", "eth0")
	if !strings.Contains(out, "mtu 1450") {
		t.Fatalf("container eth0 MTU is not 1450:\n%s", out)
	}
	out = testkit.MustRun(t, "ip", "-n", c.NS, "link", "show", "eth0")
	if !strings.Contains(out, "mtu 1500") { // host-gw adds nothing
		t.Fatalf("host-gw container MTU is not 1500:\n%s", out)
	}
}

func TestExplicitMTUAndStaticIP(t *testing.T) {
	h := hosts.NewHost(t, hosts.HostOptions{Binary: feltBin})
	n := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.44.0.0/16", Opts: map[string]string{"com.docker.network.driver.mtu": "1280"}})
	want := netip.AddrFrom4(n.Subnet.Addr().As4()).Next().Next().Next().Next().Next().Next().Next() // .7
	a := n.MustRun(t, want.String())
	if a.Addr.Addr() != want {
		t.Fatalf("--ip %s gave %s", want, a.Addr)
	}
	for _, dev := range [][]string{{h.NS, "felt-" + n.ID[:10]}, {a.NS, "eth0"}} {
		if out := testkit.MustRun(t, "ip", "-n", dev[0], "link", "show", dev[1]); !strings.Contains(out, "mtu 1280") {
			t.Fatalf("%s: MTU not 1280:\n%s", dev[1], out)
		}
	}
	_, err := n.Run(t, want.String())
	testkit.WantErr(t, err, want.String()+" is already in use")
	_, err = n.Run(t, "10.44.250.250")
	testkit.WantErr(t, err, "outside this host's subnet "+n.Subnet.String())
}

// kill -9 and restart: containers stay connected, new containers get fresh
// addresses, and deletes of objects from before the restart succeed.
func TestRestartKeepsState(t *testing.T) {
	h := hosts.NewHost(t, hosts.HostOptions{Binary: feltBin})
	n := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.45.0.0/16"})
	a := n.MustRun(t, "")
	b := n.MustRun(t, "")
	h.Kill()
	a.MustPing(t, b.Addr.Addr()) // the kernel keeps forwarding while felt is down
	h.Start()
	a.MustPing(t, b.Addr.Addr())
	c := n.MustRun(t, "")
	if c.Addr == a.Addr || c.Addr == b.Addr {
		t.Fatalf("new container got %s, already in use", c.Addr)
	}
	c.MustPing(t, a.Addr.Addr())
	testkit.Must(t, b.Stop())
	testkit.Must(t, b.Stop()) // idempotent
	h.Kill()
	h.Start()
	testkit.Must(t, a.Stop())
	testkit.Must(t, c.Stop())
	testkit.Must(t, n.Delete())
	testkit.Must(t, n.Delete()) // idempotent
	if links := hosts.FeltLinks(t, h.NS); len(links) > 0 {
		t.Fatalf("felt links left after deleting everything:\n%s", strings.Join(links, "\n"))
	}
}

// Objects left behind by a crash (a bridge of a network felt has no record
// of, a veth of an unknown endpoint) are removed at start.
func TestOrphansRemovedAtStart(t *testing.T) {
	h := hosts.NewHost(t, hosts.HostOptions{Binary: feltBin})
	h.Stop()
	inst := h.Instance()
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "add", "felt-deadbeef00", "type", "bridge")
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "set", "felt-deadbeef00", "alias", "felt:"+inst+":net:deadbeef00ffff")
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "add", "fvdeadbeef0000", "type", "veth", "peer", "name", "fcdeadbeef0000")
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "set", "fvdeadbeef0000", "alias", "felt:"+inst+":ep:deadbeef0000ffff")
	// Not this felt's: a link of another felt instance (a second plugin in
	// the same namespace), and a link that is no felt's at all.
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "add", "felt-otherinst0", "type", "bridge")
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "set", "felt-otherinst0", "alias", "felt:0ther1ns:net:0123456789")
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "add", "keepme0", "type", "veth", "peer", "name", "keepme1")
	h.Start()
	testkit.WaitFor(t, "orphans removed", func() bool { return len(hosts.FeltLinks(t, h.NS)) == 1 })
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "show", "keepme0")
	testkit.MustRun(t, "ip", "-n", h.NS, "link", "show", "felt-otherinst0")
}

func TestBadInput(t *testing.T) {
	h := hosts.NewHost(t, hosts.HostOptions{Binary: feltBin})
	cases := []struct {
		name string
		spec hosts.NetSpec
		want string
	}{
		{"missing subnet", hosts.NetSpec{}, "felt needs --subnet"},
		{"invalid CIDR", hosts.NetSpec{Subnet: "10.42.0.0/40"}, `"10.42.0.0/40" is not a CIDR`},
		{"bad subnet_len", hosts.NetSpec{Subnet: "10.46.0.0/16", IPAMOpts: map[string]string{"subnet_len": "12"}}, "subnet_len=12: must be a number from 16 to 30"},
		{"unknown -o", hosts.NetSpec{Subnet: "10.46.0.0/16", Opts: map[string]string{"encrypted": "true"}}, `unknown option "encrypted": felt accepts backend, com.docker.network.driver.mtu, directrouting, port, scope, vni`},
		{"bad backend", hosts.NetSpec{Subnet: "10.46.0.0/16", Opts: map[string]string{"backend": "ipsec"}}, "option backend=ipsec: must be vxlan, host-gw, udp or wireguard"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.CreateNetwork(c.spec)
			testkit.WantErr(t, err, c.want)
		})
	}
	// Nothing half-created: the failed creations left no bridge and no pool,
	// so the same pool can be created afterwards.
	if links := hosts.FeltLinks(t, h.NS); len(links) > 0 {
		t.Fatalf("failed creates left links:\n%s", strings.Join(links, "\n"))
	}
	n := h.MustNetwork(t, hosts.NetSpec{Subnet: "10.46.0.0/16", IPAMOpts: map[string]string{"subnet_len": "30"}})
	// A /30 has one address besides the gateway: the second container exhausts it.
	n.MustRun(t, "")
	_, err := n.Run(t, "")
	testkit.WantErr(t, err, "no free address left in "+n.Subnet.String())

	// Malformed JSON on the socket.
	err = h.CallRaw("NetworkDriver.CreateNetwork", []byte(`{"NetworkID": `), nil)
	testkit.WantErr(t, err, "malformed JSON in NetworkDriver.CreateNetwork request")
	if ce, ok := err.(*hosts.CallError); !ok || ce.Status != 400 {
		t.Fatalf("malformed JSON answered %v, want status 400", err)
	}
	// Network driver with another IPAM's pool.
	err = h.Call("NetworkDriver.CreateNetwork", netapi.CreateNetworkRequest{NetworkID: hosts.RandomID(),
		IPv4Data: []*netapi.IPAMData{{Pool: "172.30.0.0/16", Gateway: "172.30.0.1/16"}}}, nil)
	testkit.WantErr(t, err, "needs felt's IPAM")
	// Static answers work.
	var caps netapi.CapabilitiesResponse
	testkit.Must(t, h.Call("NetworkDriver.GetCapabilities", struct{}{}, &caps))
	if caps.Scope != "local" || caps.ConnectivityScope != "global" {
		t.Fatalf("capabilities %+v", caps)
	}
}
