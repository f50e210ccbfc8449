package driver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	api "github.com/docker/go-plugins-helpers/network"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/state"
)

// Checks of the addresses in Docker's requests. Every field may be hostile:
// each is parsed completely, and refused with the field's name, before any
// state is read or written.

// parseIPAMData reads CreateNetwork's IPv4Data[0]: the subnet felt's IPAM
// leased for this host, and the gateway the bridge will hold.
func parseIPAMData(data *api.IPAMData) (subnet netip.Prefix, gw netip.Addr, err error) {
	if data == nil {
		return subnet, gw, errors.New("IPv4Data[0] is null: felt needs the subnet and gateway its IPAM allocated")
	}
	subnet, err = netip.ParsePrefix(data.Pool)
	if err != nil || !subnet.Addr().Is4() {
		return subnet, gw, fmt.Errorf("IPv4Data[0].Pool %s: must be an IPv4 subnet in CIDR notation", quote(data.Pool))
	}
	if subnet.Masked() != subnet {
		return subnet, gw, fmt.Errorf("IPv4Data[0].Pool %s has host bits set (the subnet is %s)", subnet, subnet.Masked())
	}
	if data.Gateway == "" {
		return subnet, gw, errors.New("IPv4Data[0].Gateway is missing: felt networks need --ipam-driver felt:latest, which supplies it")
	}
	gwPrefix, err := netip.ParsePrefix(data.Gateway)
	if err != nil {
		return subnet, gw, fmt.Errorf("IPv4Data[0].Gateway %s: must be an IPv4 address with the subnet's prefix length (e.g. 10.42.3.1/24)", quote(data.Gateway))
	}
	gw = gwPrefix.Addr()
	// The bridge gets this address: one outside the host's subnet (another
	// host's gateway, the host's own underlay address) would take over
	// traffic that is not the network's.
	if !gw.Is4() || !subnet.Contains(gw) {
		return subnet, gw, fmt.Errorf("gateway %s is outside this host's subnet %s: the gateway must be an address of %s", gw, subnet, subnet)
	}
	if !usable(subnet, gw) {
		return subnet, gw, fmt.Errorf("gateway %s is the network or broadcast address of %s", gw, subnet)
	}
	return subnet, gw, nil
}

// usable reports whether a is an address of subnet that a host can hold.
func usable(subnet netip.Prefix, a netip.Addr) bool {
	return subnet.Contains(a) && a != subnet.Addr() && a != ipnet.Last(subnet)
}

// parseInterface reads CreateEndpoint's Interface: the address felt's IPAM
// allocated, and the MAC address if Docker chose one ("" if not).
func parseInterface(iface *api.EndpointInterface) (addr netip.Prefix, mac string, err error) {
	if iface == nil || iface.Address == "" {
		return addr, "", errors.New("endpoint has no IPv4 address: felt networks need --ipam-driver felt:latest")
	}
	if iface.AddressIPv6 != "" {
		return addr, "", fmt.Errorf("Interface.AddressIPv6 %s: felt supports IPv4 only", quote(iface.AddressIPv6))
	}
	addr, err = netip.ParsePrefix(iface.Address)
	if err != nil || !addr.Addr().Is4() {
		return addr, "", fmt.Errorf("Interface.Address %s: must be an IPv4 address with its prefix length (e.g. 10.42.3.7/24)", quote(iface.Address))
	}
	if iface.MacAddress != "" {
		hw, err := net.ParseMAC(iface.MacAddress)
		if err != nil || len(hw) != 6 {
			return addr, "", fmt.Errorf("Interface.MacAddress %s: must be an Ethernet address (e.g. 02:42:0a:2a:03:07)", quote(iface.MacAddress))
		}
		if hw[0]&1 != 0 || hw.String() == "00:00:00:00:00:00" {
			return addr, "", fmt.Errorf("Interface.MacAddress %s: must be a unicast address, not zero", hw)
		}
		mac = hw.String()
	}
	return addr, mac, nil
}

// checkEndpointAddress refuses an endpoint address this host's subnet of n
// cannot give a container.
func checkEndpointAddress(n state.Network, addr netip.Prefix) error {
	a := addr.Addr()
	switch {
	case !n.Subnet.Contains(a):
		return fmt.Errorf("endpoint address %s is outside the network's subnet %s on this host", addr, n.Subnet)
	case !usable(n.Subnet, a):
		return fmt.Errorf("endpoint address %s is the network or broadcast address of %s", a, n.Subnet)
	case a == n.Gateway:
		return fmt.Errorf("endpoint address %s is the gateway of %s", a, n.Subnet)
	}
	return nil
}
