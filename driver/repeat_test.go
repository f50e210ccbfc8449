package driver

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	api "github.com/docker/go-plugins-helpers/network"

	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/testkit"
)

// A repeated CreateNetwork of an existing network (Docker resending it, or
// anyone on the socket) keeps the firewall rules of the host's other felt
// networks: it re-synced the firewall with that one network alone, so every
// other network lost its isolation rules (and Keep kept them lost).
func TestRepeatedCreateNetworkKeepsOtherNetworksRules(t *testing.T) {
	e := newEnv(t)
	fw, err := firewall.New(e.host.Handle, "testinst", "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		testkit.Unavailable(t, "iptables: %v", err) // fails with CI=true
	}
	e.d.cfg.Firewall = fw
	a := e.network(t, id("aa", 'a'), "10.60.0.0/16")
	b := e.network(t, id("bb", 'b'), "10.61.0.0/16")
	// The firewall keeps which networks it isolates in ipsets.
	rules := func() string { return firewallSets(t, e.host) }
	if r := rules(); !strings.Contains(r, BridgeName(a.ID)) || !strings.Contains(r, BridgeName(b.ID)) {
		t.Fatalf("rules of both networks expected before the repeat:\n%s", r)
	}
	must(t, e.d.CreateNetwork(ctx, &api.CreateNetworkRequest{NetworkID: b.ID,
		Options:  map[string]any{optGeneric: map[string]any{}},
		IPv4Data: []*api.IPAMData{{Pool: b.Subnet.String(), Gateway: b.Gateway}}}))
	if r := rules(); !strings.Contains(r, BridgeName(a.ID)) {
		t.Fatalf("a repeated CreateNetwork of %s removed the rules of network %s:\n%s", BridgeName(b.ID), BridgeName(a.ID), r)
	}
}

// A repeated CreateNetwork must describe the network that exists, as a
// repeated CreateEndpoint must: one naming another subnet or gateway was
// answered with success while the bridge kept the first, so the caller
// believed in a network that does not exist.
func TestRepeatedCreateNetworkWithOtherAddressesRefused(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("aa", 'a'), "10.66.0.0/16")
	other, err := e.ipam.RequestPool(ctx, ipamPool("10.67.0.0/16"))
	must(t, err)
	for _, data := range []*api.IPAMData{
		{Pool: other.Pool, Gateway: other.Data["com.docker.network.gateway"]},
		{Pool: n.Subnet.String(), Gateway: addrIn(n, 9)},
	} {
		err := e.d.CreateNetwork(ctx, &api.CreateNetworkRequest{NetworkID: n.ID, IPv4Data: []*api.IPAMData{data}})
		wantErr(t, err, "already exists")
	}
	// The same one again is fine.
	must(t, e.d.CreateNetwork(ctx, &api.CreateNetworkRequest{NetworkID: n.ID,
		IPv4Data: []*api.IPAMData{{Pool: n.Subnet.String(), Gateway: n.Gateway}}}))
}
