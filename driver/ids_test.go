package driver

import (
	"strings"
	"testing"

	api "github.com/docker/go-plugins-helpers/network"
)

// A DeleteNetwork of an unknown network whose ID shares the bridge name's
// prefix with a live network succeeds and leaves the live bridge alone.
func TestDeleteNetworkSharedPrefixKeepsLiveBridge(t *testing.T) {
	e := newEnv(t)
	live := e.network(t, id("0123456789", 'a'), "10.50.0.0/16")
	must(t, e.d.DeleteNetwork(ctx, &api.DeleteNetworkRequest{NetworkID: id("0123456789", 'b')}))
	if link(t, e.host, BridgeName(live.ID)) == nil {
		t.Fatalf("bridge %s of the live network was deleted by a delete of another ID", BridgeName(live.ID))
	}
	// The real delete still removes it.
	must(t, e.d.DeleteNetwork(ctx, &api.DeleteNetworkRequest{NetworkID: live.ID}))
	if link(t, e.host, BridgeName(live.ID)) != nil {
		t.Fatal("bridge left after deleting its network")
	}
}

// A DeleteEndpoint of an unknown endpoint whose ID shares the veth name's
// prefix with a live container's endpoint succeeds and does not cut the
// container off.
func TestDeleteEndpointSharedPrefixKeepsLiveVeth(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("", 'a'), "10.51.0.0/16")
	epID := id("0123456789ab", 'c')
	ctr := e.endpoint(t, n, epID)
	host, peer := vethNames(epID)
	must(t, e.d.DeleteEndpoint(ctx, &api.DeleteEndpointRequest{NetworkID: n.ID, EndpointID: id("0123456789ab", 'd')}))
	if link(t, e.host, host) == nil || link(t, ctr, peer) == nil {
		t.Fatal("the live container's veth was deleted by a delete of another endpoint ID")
	}
	must(t, e.d.DeleteEndpoint(ctx, &api.DeleteEndpointRequest{NetworkID: n.ID, EndpointID: epID}))
	if link(t, e.host, host) != nil || link(t, ctr, peer) != nil {
		t.Fatal("veth left after deleting its endpoint")
	}
}

// A CreateNetwork whose ID shares the bridge name with a live network is
// refused; the live bridge keeps its owner and its only address.
func TestCreateNetworkSharedPrefixRefused(t *testing.T) {
	e := newEnv(t)
	live := e.network(t, id("0123456789", 'a'), "10.52.0.0/16")
	other, err := e.ipam.RequestPool(ctx, ipamPool("10.53.0.0/16"))
	must(t, err)
	err = e.d.CreateNetwork(ctx, &api.CreateNetworkRequest{NetworkID: id("0123456789", 'b'),
		IPv4Data: []*api.IPAMData{{Pool: other.Pool, Gateway: other.Data["com.docker.network.gateway"]}}})
	wantErr(t, err, BridgeName(live.ID), live.ID)
	br := link(t, e.host, BridgeName(live.ID))
	if br == nil {
		t.Fatal("live bridge gone")
	}
	if br.Attrs().Alias != e.d.aliasNetwork()+live.ID {
		t.Fatalf("live bridge alias is now %q", br.Attrs().Alias)
	}
	addrs, err := e.host.NL.AddrList(br, 2)
	must(t, err)
	if len(addrs) != 1 {
		t.Fatalf("live bridge has addresses %v, want only its gateway %s", addrs, live.Gateway)
	}
	e.wantNetworks(t, 1, "a refused network")
}

// A CreateEndpoint whose ID shares the veth name with a live endpoint is
// refused and leaves the live one alone.
func TestCreateEndpointSharedPrefixRefused(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("", 'a'), "10.54.0.0/16")
	epID := id("0123456789ab", 'c')
	e.endpoint(t, n, epID) // joined: the container end is in the container
	// A second endpoint whose first 12 characters are the same, before the
	// live one's container end is moved: both ends of the live pair exist.
	epID2 := id("0123456789ab", 'e')
	_, err := e.d.CreateEndpoint(ctx, &api.CreateEndpointRequest{NetworkID: n.ID, EndpointID: epID2,
		Interface: &api.EndpointInterface{Address: addrIn(n, 77), MacAddress: "02:42:00:00:00:77"}})
	wantErr(t, err, "fv0123456789ab", epID)
	host, _ := vethNames(epID)
	if l := link(t, e.host, host); l == nil || l.Attrs().Alias != e.d.aliasEndpoint()+epID {
		t.Fatalf("live veth %s gone or taken over: %v", host, l)
	}
}

// A second Join of a joined endpoint answers as the first and leaves the
// pair alone: the container keeps its interface.
func TestJoinTwiceKeepsContainerConnected(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("", 'a'), "10.55.0.0/16")
	epID := id("", 'c')
	ctr := e.endpoint(t, n, epID)
	host, peer := vethNames(epID)
	before := link(t, e.host, host).Attrs().Index
	j, err := e.d.Join(ctx, &api.JoinRequest{NetworkID: n.ID, EndpointID: epID})
	must(t, err)
	if j.InterfaceName.SrcName != peer || j.InterfaceName.DstPrefix != "eth" {
		t.Fatalf("second Join answered %+v", j.InterfaceName)
	}
	if l := link(t, e.host, host); l == nil || l.Attrs().Index != before {
		t.Fatalf("second Join recreated the host end %s", host)
	}
	if link(t, ctr, peer) == nil {
		t.Fatal("second Join cut the container off: its end of the pair is gone")
	}
	if link(t, e.host, peer) != nil {
		t.Fatal("second Join made a new container end in the host namespace")
	}
}

// A Join naming an endpoint with another network than its own is refused:
// it would otherwise put the endpoint's veth on the other network's bridge.
func TestJoinOtherNetworkRefused(t *testing.T) {
	e := newEnv(t)
	a := e.network(t, id("", 'a'), "10.56.0.0/16")
	b := e.network(t, id("", 'b'), "10.57.0.0/16")
	epID := id("", 'c')
	e.endpoint(t, a, epID)
	_, err := e.d.Join(ctx, &api.JoinRequest{NetworkID: b.ID, EndpointID: epID})
	wantErr(t, err, "endpoint "+epID, "network "+a.ID)
	err = e.d.DeleteEndpoint(ctx, &api.DeleteEndpointRequest{NetworkID: b.ID, EndpointID: epID})
	wantErr(t, err, "endpoint "+epID, "network "+a.ID)
}

// IDs that are not what Docker sends are refused by every call, with the
// field named; nothing is created or deleted.
func TestMalformedIDsRefused(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("", 'a'), "10.58.0.0/16")
	good := id("", 'f')
	bad := map[string]string{
		"empty":     "",
		"short":     n.ID[:12],
		"long":      n.ID + "0",
		"upper":     id("", 'A'),
		"non-hex":   id("", 'g'),
		"traversal": "../" + n.ID[3:],
		"space":     " " + n.ID[1:],
	}
	iface := &api.EndpointInterface{Address: addrIn(n, 9), MacAddress: "02:42:00:00:00:09"}
	for name, badID := range bad {
		t.Run(name, func(t *testing.T) {
			calls := map[string]func() error{
				"CreateNetwork NetworkID": func() error {
					return e.d.CreateNetwork(ctx, &api.CreateNetworkRequest{NetworkID: badID,
						IPv4Data: []*api.IPAMData{{Pool: n.Subnet.String(), Gateway: n.Gateway}}})
				},
				"DeleteNetwork NetworkID": func() error {
					return e.d.DeleteNetwork(ctx, &api.DeleteNetworkRequest{NetworkID: badID})
				},
				"CreateEndpoint NetworkID": func() error {
					_, err := e.d.CreateEndpoint(ctx, &api.CreateEndpointRequest{NetworkID: badID, EndpointID: good, Interface: iface})
					return err
				},
				"CreateEndpoint EndpointID": func() error {
					_, err := e.d.CreateEndpoint(ctx, &api.CreateEndpointRequest{NetworkID: n.ID, EndpointID: badID, Interface: iface})
					return err
				},
				"DeleteEndpoint EndpointID": func() error {
					return e.d.DeleteEndpoint(ctx, &api.DeleteEndpointRequest{NetworkID: n.ID, EndpointID: badID})
				},
				"DeleteEndpoint NetworkID": func() error {
					return e.d.DeleteEndpoint(ctx, &api.DeleteEndpointRequest{NetworkID: badID, EndpointID: good})
				},
				"Join EndpointID": func() error {
					_, err := e.d.Join(ctx, &api.JoinRequest{NetworkID: n.ID, EndpointID: badID})
					return err
				},
				"Join NetworkID": func() error {
					_, err := e.d.Join(ctx, &api.JoinRequest{NetworkID: badID, EndpointID: good})
					return err
				},
				"Leave EndpointID": func() error {
					return e.d.Leave(ctx, &api.LeaveRequest{NetworkID: n.ID, EndpointID: badID})
				},
				"ProgramExternalConnectivity EndpointID": func() error {
					return e.d.ProgramExternalConnectivity(ctx, &api.ProgramExternalConnectivityRequest{NetworkID: n.ID, EndpointID: badID})
				},
				"RevokeExternalConnectivity NetworkID": func() error {
					return e.d.RevokeExternalConnectivity(ctx, &api.RevokeExternalConnectivityRequest{NetworkID: badID, EndpointID: good})
				},
				"EndpointOperInfo EndpointID": func() error {
					_, err := e.d.EndpointInfo(ctx, &api.InfoRequest{NetworkID: n.ID, EndpointID: badID})
					return err
				},
			}
			for call, fn := range calls {
				field := strings.Fields(call)[1]
				err := fn()
				if err == nil {
					t.Errorf("%s %q: accepted", call, badID)
					continue
				}
				for _, w := range []string{field, "64 lowercase hex"} {
					if !contains(err.Error(), w) {
						t.Errorf("%s %q: error %q does not contain %q", call, badID, err, w)
					}
				}
			}
		})
	}
	if link(t, e.host, BridgeName(n.ID)) == nil {
		t.Fatal("the live bridge was deleted by a malformed delete")
	}
	e.wantNetworks(t, 1, "malformed calls")
}

// Deletes of objects felt has no record of (its state was lost) still remove
// the links recorded with that exact ID, and a Join of an endpoint whose
// pair vanished makes it again.
func TestLeftoversOfTheSameIDRemoved(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("", 'a'), "10.59.0.0/16")
	epID := id("", 'c')
	host, peer := vethNames(epID)
	e.endpoint(t, n, epID)

	// Pair deleted behind felt's back: Join makes it again.
	must(t, e.host.NL.LinkDel(link(t, e.host, host)))
	j, err := e.d.Join(ctx, &api.JoinRequest{NetworkID: n.ID, EndpointID: epID})
	must(t, err)
	if link(t, e.host, host) == nil || link(t, e.host, j.InterfaceName.SrcName) == nil || j.InterfaceName.SrcName != peer {
		t.Fatalf("Join did not remake the vanished pair: %+v", j.InterfaceName)
	}

	// Records lost: the deletes find the links by name and alias.
	must(t, e.d.cfg.State.DeleteEndpoint(ctx, epID))
	must(t, e.d.cfg.State.DeleteNetwork(ctx, n.ID))
	must(t, e.d.DeleteEndpoint(ctx, &api.DeleteEndpointRequest{NetworkID: n.ID, EndpointID: epID}))
	if link(t, e.host, host) != nil || link(t, e.host, peer) != nil {
		t.Fatal("DeleteEndpoint of an unrecorded endpoint left its pair")
	}
	must(t, e.d.DeleteNetwork(ctx, &api.DeleteNetworkRequest{NetworkID: n.ID}))
	if link(t, e.host, BridgeName(n.ID)) != nil {
		t.Fatal("DeleteNetwork of an unrecorded network left its bridge")
	}
}
