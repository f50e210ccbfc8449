package driver

import (
	"strings"
	"testing"

	api "github.com/docker/go-plugins-helpers/network"
)

// Malformed CreateNetwork requests are answered with an error naming the
// field, never a panic, and leave nothing behind: no bridge, no record.
func TestCreateNetworkMalformed(t *testing.T) {
	e := newEnv(t)
	p, err := e.ipam.RequestPool(ctx, ipamPool("10.60.0.0/16"))
	must(t, err)
	subnet, gw := p.Pool, p.Data["com.docker.network.gateway"] // 10.60.x.0/24, 10.60.x.1/24
	netID := id("", 'a')
	huge := strings.Repeat("9", 1<<20)
	data := func(pool, gw string) []*api.IPAMData { return []*api.IPAMData{{Pool: pool, Gateway: gw}} }
	cases := []struct {
		name string
		req  api.CreateNetworkRequest
		want []string
	}{
		{"null IPv4Data entry", api.CreateNetworkRequest{IPv4Data: []*api.IPAMData{nil}}, []string{"IPv4Data[0]"}},
		{"no IPv4Data", api.CreateNetworkRequest{}, []string{"exactly one --subnet", "got 0"}},
		{"two IPv4Data", api.CreateNetworkRequest{IPv4Data: append(data(subnet, gw), data(subnet, gw)...)}, []string{"exactly one --subnet", "got 2"}},
		{"IPv6Data null entry", api.CreateNetworkRequest{IPv4Data: data(subnet, gw), IPv6Data: []*api.IPAMData{nil}}, []string{"IPv4 only"}},
		{"IPv4 disabled", api.CreateNetworkRequest{Options: map[string]any{optEnableIPv4: false}}, []string{"IPv4", optEnableIPv4}},
		{"generic not an object", api.CreateNetworkRequest{Options: map[string]any{optGeneric: "backend=udp"}, IPv4Data: data(subnet, gw)}, []string{optGeneric}},
		{"pool not a CIDR", api.CreateNetworkRequest{IPv4Data: data("10.60.0.0", gw)}, []string{"IPv4Data[0].Pool", `"10.60.0.0"`}},
		{"pool not masked", api.CreateNetworkRequest{IPv4Data: data("10.60.0.7/16", gw)}, []string{"IPv4Data[0].Pool", "10.60.0.7/16"}},
		{"pool IPv6", api.CreateNetworkRequest{IPv4Data: data("fd00::/64", "fd00::1/64")}, []string{"IPv4Data[0].Pool", "fd00::/64", "IPv4"}},
		{"huge pool", api.CreateNetworkRequest{IPv4Data: data(huge, gw)}, []string{"IPv4Data[0].Pool"}},
		{"no gateway", api.CreateNetworkRequest{IPv4Data: data(subnet, "")}, []string{"IPv4Data[0].Gateway"}},
		{"gateway not a CIDR", api.CreateNetworkRequest{IPv4Data: data(subnet, "10.60.0.1")}, []string{"IPv4Data[0].Gateway", `"10.60.0.1"`}},
		{"gateway is the underlay address", api.CreateNetworkRequest{IPv4Data: data(subnet, "192.0.2.1/24")}, []string{"gateway 192.0.2.1", "outside", subnet}},
		{"gateway in the pool, another host's subnet", api.CreateNetworkRequest{IPv4Data: data(subnet, "10.60.250.1/16")}, []string{"gateway 10.60.250.1", subnet}},
		{"gateway is the network address", api.CreateNetworkRequest{IPv4Data: data(subnet, subnet)}, []string{"gateway", "network or broadcast address", subnet}},
		{"gateway IPv6", api.CreateNetworkRequest{IPv4Data: data(subnet, "fd00::1/64")}, []string{"gateway fd00::1", subnet}},
		{"huge gateway", api.CreateNetworkRequest{IPv4Data: data(subnet, huge)}, []string{"IPv4Data[0].Gateway"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.req.NetworkID = netID
			err := e.d.CreateNetwork(ctx, &c.req)
			wantErr(t, err, c.want...)
			if len(err.Error()) > 1000 {
				t.Fatalf("error of %d bytes: hostile input must not be echoed whole", len(err.Error()))
			}
		})
	}
	if l := link(t, e.host, BridgeName(netID)); l != nil {
		t.Fatalf("refused CreateNetwork left bridge %s", l.Attrs().Name)
	}
	e.wantNetworks(t, 0, "refused CreateNetworks")
	// The same pool works afterwards.
	must(t, e.d.CreateNetwork(ctx, &api.CreateNetworkRequest{NetworkID: netID, IPv4Data: data(subnet, gw)}))
}

// Malformed CreateEndpoint requests are answered with an error naming the
// field and leave no veth behind.
func TestCreateEndpointMalformed(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("", 'a'), "10.61.0.0/16")
	epID := id("", 'c')
	iface := func(addr, mac string) *api.EndpointInterface {
		return &api.EndpointInterface{Address: addr, MacAddress: mac}
	}
	cases := []struct {
		name  string
		iface *api.EndpointInterface
		want  []string
	}{
		{"nil Interface", nil, []string{"no IPv4 address"}},
		{"no address", iface("", ""), []string{"no IPv4 address"}},
		{"address not a CIDR", iface("10.61.0.9", ""), []string{"Interface.Address", `"10.61.0.9"`}},
		{"address outside the subnet", iface("192.0.2.9/24", ""), []string{"192.0.2.9", n.Subnet.String()}},
		{"address is the gateway", iface(n.Gateway, ""), []string{"gateway", n.Subnet.String()}},
		{"address is the broadcast address", iface(addrIn(n, 255), ""), []string{"network or broadcast address"}},
		{"IPv6 address", iface("fd00::9/64", ""), []string{"Interface.Address", "IPv4"}},
		{"IPv6 address beside", &api.EndpointInterface{Address: addrIn(n, 9), AddressIPv6: "fd00::9/64"}, []string{"IPv4 only"}},
		{"bad MAC", iface(addrIn(n, 9), "zz:zz"), []string{"Interface.MacAddress", `"zz:zz"`}},
		{"long MAC", iface(addrIn(n, 9), "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"), []string{"Interface.MacAddress"}},
		{"multicast MAC", iface(addrIn(n, 9), "01:00:5e:00:00:01"), []string{"Interface.MacAddress", "unicast"}},
		{"huge address", iface(strings.Repeat("1", 1<<20), ""), []string{"Interface.Address"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.d.CreateEndpoint(ctx, &api.CreateEndpointRequest{NetworkID: n.ID, EndpointID: epID, Interface: c.iface})
			wantErr(t, err, c.want...)
			if len(err.Error()) > 1000 {
				t.Fatalf("error of %d bytes: hostile input must not be echoed whole", len(err.Error()))
			}
		})
	}
	host, peer := vethNames(epID)
	if link(t, e.host, host) != nil || link(t, e.host, peer) != nil {
		t.Fatal("refused CreateEndpoint left a veth")
	}
	_, err := e.d.Join(ctx, &api.JoinRequest{NetworkID: n.ID, EndpointID: epID})
	wantErr(t, err, "does not exist")
}
