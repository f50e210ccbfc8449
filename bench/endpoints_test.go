package bench

import (
	"fmt"
	"net/netip"
	"time"

	ipamapi "github.com/docker/go-plugins-helpers/ipam"
	netapi "github.com/docker/go-plugins-helpers/network"

	"github.com/felt-net/felt/testkit/hosts"
)

// endpointLatency times CreateEndpoint+Join over felt's socket for count
// endpoints on n, created one after another and kept (as containers pile up
// on a host), then Leave+DeleteEndpoint for each. The calls are those
// hosts.Net.Run makes, in Docker's order; the address request before
// and the release after are not timed, nor is moving the veth into a
// container namespace (Docker's work, not felt's).
func endpointLatency(s *scope, n *hosts.Net, count int) (join, remove Dist) {
	h := n.Host
	type ep struct{ id, addr string }
	var eps []ep
	removed := false
	s.Cleanup(func() {
		if removed {
			return
		}
		for _, e := range eps { // after a failure: best effort, as docker rm would
			_ = h.Call("NetworkDriver.Leave", netapi.LeaveRequest{NetworkID: n.ID, EndpointID: e.id}, nil)
			_ = h.Call("NetworkDriver.DeleteEndpoint", netapi.DeleteEndpointRequest{NetworkID: n.ID, EndpointID: e.id}, nil)
			_ = h.Call("IpamDriver.ReleaseAddress", ipamapi.ReleaseAddressRequest{PoolID: n.PoolID, Address: e.addr}, nil)
		}
	})
	var joins, removes []time.Duration
	for i := range count {
		mac := fmt.Sprintf("02:fe:00:00:%02x:%02x", byte(i>>8), byte(i))
		var addr ipamapi.RequestAddressResponse
		if err := h.Call("IpamDriver.RequestAddress", ipamapi.RequestAddressRequest{PoolID: n.PoolID,
			Options: map[string]string{"com.docker.network.endpoint.macaddress": mac}}, &addr); err != nil {
			s.Fatalf("endpoint %d: RequestAddress: %v", i, err)
		}
		a, err := netip.ParsePrefix(addr.Address)
		if err != nil {
			s.Fatalf("endpoint %d: RequestAddress returned %q: %v", i, addr.Address, err)
		}
		e := ep{id: hosts.RandomID(), addr: a.Addr().String()} // released without the length, as Docker does
		t0 := time.Now()
		err = h.Call("NetworkDriver.CreateEndpoint", netapi.CreateEndpointRequest{NetworkID: n.ID, EndpointID: e.id,
			Interface: &netapi.EndpointInterface{Address: addr.Address, MacAddress: mac}}, &netapi.CreateEndpointResponse{})
		if err != nil {
			s.Fatalf("endpoint %d: CreateEndpoint: %v", i, err)
		}
		eps = append(eps, e)
		if err := h.Call("NetworkDriver.Join", netapi.JoinRequest{NetworkID: n.ID, EndpointID: e.id,
			SandboxKey: "/var/run/docker/netns/bench"}, &netapi.JoinResponse{}); err != nil {
			s.Fatalf("endpoint %d: Join: %v", i, err)
		}
		joins = append(joins, time.Since(t0))
	}
	for i, e := range eps {
		t0 := time.Now()
		if err := h.Call("NetworkDriver.Leave", netapi.LeaveRequest{NetworkID: n.ID, EndpointID: e.id}, nil); err != nil {
			s.Fatalf("endpoint %d: Leave: %v", i, err)
		}
		if err := h.Call("NetworkDriver.DeleteEndpoint", netapi.DeleteEndpointRequest{NetworkID: n.ID, EndpointID: e.id}, nil); err != nil {
			s.Fatalf("endpoint %d: DeleteEndpoint: %v", i, err)
		}
		removes = append(removes, time.Since(t0))
		if err := h.Call("IpamDriver.ReleaseAddress", ipamapi.ReleaseAddressRequest{PoolID: n.PoolID, Address: e.addr}, nil); err != nil {
			s.Fatalf("endpoint %d: ReleaseAddress: %v", i, err)
		}
	}
	removed = true
	return distOf(joins, "ms"), distOf(removes, "ms")
}
