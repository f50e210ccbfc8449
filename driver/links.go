package driver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// Every link felt creates carries an alias naming the felt instance (its
// host ID: one per state store) and what the link belongs to, so start-up
// can tell its own leftovers from anything else on the host, including the
// links of another felt instance sharing the namespace (a second plugin).
func (d *Driver) aliasNetwork() string  { return "felt:" + d.cfg.Instance + ":net:" }
func (d *Driver) aliasEndpoint() string { return "felt:" + d.cfg.Instance + ":ep:" }

// BridgeName is the bridge of a network: "felt-" and 10 characters of the
// network ID, within the kernel's 15-character limit.
func BridgeName(networkID string) string { return "felt-" + short(networkID, 10) }

// vethNames are the host and container ends of an endpoint's veth pair.
func vethNames(endpointID string) (host, peer string) {
	return "fv" + short(endpointID, 12), "fc" + short(endpointID, 12)
}

func short(id string, n int) string {
	if len(id) > n {
		return id[:n]
	}
	return id
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// ensureBridge creates (or repairs) the bridge of a network: it exists, is up,
// has the MTU and holds the gateway address.
func (d *Driver) ensureBridge(n Network) error {
	link, err := d.nl.LinkByName(n.Bridge)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	if link == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = n.Bridge
		attrs.MTU = n.MTU
		br := &netlink.Bridge{LinkAttrs: attrs}
		if err := d.nl.LinkAdd(br); err != nil {
			return fmt.Errorf("bridge %s: create: %w", n.Bridge, err)
		}
		if link, err = d.nl.LinkByName(n.Bridge); err != nil {
			return fmt.Errorf("bridge %s: %w", n.Bridge, err)
		}
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return fmt.Errorf("bridge %s: a %s link of that name exists and is not felt's", n.Bridge, link.Type())
	}
	if err := d.nl.LinkSetAlias(link, d.aliasNetwork()+n.ID); err != nil {
		return fmt.Errorf("bridge %s: alias: %w", n.Bridge, err)
	}
	if link.Attrs().MTU != n.MTU {
		if err := d.nl.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("bridge %s: mtu %d: %w", n.Bridge, n.MTU, err)
		}
	}
	gw := &netlink.Addr{IPNet: toIPNet(netip.PrefixFrom(n.Gateway, n.Subnet.Bits()))}
	if err := d.nl.AddrReplace(link, gw); err != nil {
		return fmt.Errorf("bridge %s: address %s: %w", n.Bridge, gw.IPNet, err)
	}
	if err := d.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("bridge %s: up: %w", n.Bridge, err)
	}
	return nil
}

// deleteLink removes a link by name; a missing one is fine.
func (d *Driver) deleteLink(name string) error {
	link, err := d.nl.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := d.nl.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("link %s: delete: %w", name, err)
	}
	return nil
}

// createVeth makes an endpoint's pair: the host end on the bridge and up, the
// container end left in the host namespace for Docker to move. Both ends get
// the network's MTU, since Docker never sets it.
func (d *Driver) createVeth(n Network, ep Endpoint) error {
	br, err := d.nl.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ep.HostVeth
	attrs.MTU = n.MTU
	attrs.MasterIndex = br.Attrs().Index
	mac, _ := net.ParseMAC(ep.MAC)
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: ep.PeerVeth, PeerMTU: uint32(n.MTU), PeerHardwareAddr: mac}
	if err := d.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s: create: %w", ep.HostVeth, err)
	}
	host, err := d.nl.LinkByName(ep.HostVeth)
	if err == nil {
		err = d.nl.LinkSetAlias(host, d.aliasEndpoint()+ep.ID)
	}
	if err == nil {
		err = d.nl.LinkSetUp(host)
	}
	if err != nil {
		_ = d.deleteLink(ep.HostVeth)
		return fmt.Errorf("veth %s: %w", ep.HostVeth, err)
	}
	return nil
}

func toIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// feltLinks lists links carrying one of felt's aliases, by kind.
func (d *Driver) feltLinks() (networks, endpoints map[string]netlink.Link, err error) {
	links, err := d.nl.LinkList()
	if err != nil {
		return nil, nil, fmt.Errorf("list links: %w", err)
	}
	networks, endpoints = map[string]netlink.Link{}, map[string]netlink.Link{}
	for _, l := range links {
		alias := l.Attrs().Alias
		switch {
		case strings.HasPrefix(alias, d.aliasNetwork()):
			networks[strings.TrimPrefix(alias, d.aliasNetwork())] = l
		case strings.HasPrefix(alias, d.aliasEndpoint()):
			endpoints[strings.TrimPrefix(alias, d.aliasEndpoint())] = l
		}
	}
	return networks, endpoints, nil
}
