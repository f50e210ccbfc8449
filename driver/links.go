package driver

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/state"
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

// Link names carry only a prefix of an ID (the kernel allows 15
// characters), so a name alone never proves whose a link is: its alias,
// which records the full ID, does. felt deletes or reuses a link only when
// its alias names the exact network or endpoint of the request.

// linkByName returns the link called name, or nil if there is none.
func (d *Driver) linkByName(name string) (netlink.Link, error) {
	l, err := d.nl.LinkByName(name)
	if nlerr.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	return l, nil
}

// owner describes whose a link is, for errors.
func owner(l netlink.Link) string {
	if a := l.Attrs().Alias; a != "" {
		return fmt.Sprintf("a %s link with alias %q", l.Type(), a)
	}
	return fmt.Sprintf("a %s link without felt's alias", l.Type())
}

// ownsLink reports whether the link called name exists and carries alias.
func (d *Driver) ownsLink(name, alias string) (bool, error) {
	l, err := d.linkByName(name)
	if err != nil || l == nil {
		return false, err
	}
	return l.Attrs().Alias == alias, nil
}

// deleteOwnedLink removes the link called name if it carries alias. A
// missing link is fine; a link of that name carrying anything else belongs
// to another network or endpoint (whose ID shares the prefix) or to no felt
// object at all, and is left alone.
func (d *Driver) deleteOwnedLink(name, alias string) error {
	l, err := d.linkByName(name)
	if err != nil || l == nil {
		return err
	}
	if l.Attrs().Alias != alias {
		d.cfg.Log.Warn("not deleting a link that is not this object's", "link", name, "alias", l.Attrs().Alias, "want", alias)
		return nil
	}
	return d.deleteLink(l)
}

// claimName frees name for a new link of owner alias: a leftover of the same
// owner goes, and so does a link of that name with no alias at all (felt
// sets the alias right after creating a link, so a crash can leave one
// without); a link of anyone else is an error.
func (d *Driver) claimName(name, alias string) error {
	l, err := d.linkByName(name)
	if err != nil || l == nil {
		return err
	}
	if a := l.Attrs().Alias; a != alias && a != "" {
		return fmt.Errorf("link name %s is taken by %s: refusing %s", name, owner(l), strings.TrimPrefix(alias, "felt:"+d.cfg.Instance+":"))
	}
	return d.deleteLink(l)
}

// checkBridgeName refuses a network whose bridge name is held by a link of
// another network (their IDs share the first characters) or of anyone else.
// gw is the gateway (with the subnet's length) the bridge is to hold.
func (d *Driver) checkBridgeName(name, networkID string, gw netip.Prefix) error {
	l, err := d.linkByName(name)
	if err != nil || l == nil {
		return err
	}
	switch a := l.Attrs().Alias; {
	case a == d.aliasNetwork()+networkID:
		return nil // ours: ensureBridge repairs it
	case a == "" && isBridge(l):
		// felt marks a bridge right after creating it, so a crash can
		// leave one unmarked: ensureBridge adopts it. A stranger's bridge
		// of that name (Docker's -o com.docker.network.bridge.name, a VM
		// bridge) is not adopted: felt would join its network to theirs.
		if why, err := d.strangerBridge(l, gw); err != nil {
			return err
		} else if why != "" {
			return fmt.Errorf("network %s: its bridge name %s is taken by a bridge that is not felt's (no felt alias, %s)", networkID, name, why)
		}
		return nil
	case strings.HasPrefix(a, d.aliasNetwork()):
		return fmt.Errorf("bridge %s belongs to felt network %s, whose ID shares its first 10 characters with network %s: refusing the new network",
			name, strings.TrimPrefix(a, d.aliasNetwork()), networkID)
	default:
		return fmt.Errorf("network %s: its bridge name %s is taken by %s", networkID, name, owner(l))
	}
}

// strangerBridge says why br, an unmarked bridge, is not a leftover of
// felt's ("" if it may be one): a leftover holds no IPv4 address but gw and
// has no ports (felt adds both only after marking it).
func (d *Driver) strangerBridge(br netlink.Link, gw netip.Prefix) (string, error) {
	addrs, err := d.nl.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return "", fmt.Errorf("bridge %s: addresses: %w", br.Attrs().Name, err)
	}
	for _, a := range addrs {
		p, ok := netip.AddrFromSlice(a.IP.To4())
		bits, _ := a.Mask.Size()
		if !ok || netip.PrefixFrom(p, bits) != gw {
			return fmt.Sprintf("it holds address %s", a.IPNet), nil
		}
	}
	links, err := d.nl.LinkList()
	if err != nil {
		return "", fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			return fmt.Sprintf("%s is its port", l.Attrs().Name), nil
		}
	}
	return "", nil
}

func isBridge(l netlink.Link) bool { _, ok := l.(*netlink.Bridge); return ok }

// ensureBridge creates (or repairs) the bridge of a network: it exists, is up,
// has the MTU and holds the gateway address. A bridge it created goes again
// when a later step fails: unmarked, nothing else would remove it.
func (d *Driver) ensureBridge(n state.Network) (err error) {
	if err := d.checkBridgeName(n.Bridge, n.ID, netip.PrefixFrom(n.Gateway, n.Subnet.Bits())); err != nil {
		return err
	}
	link, err := d.linkByName(n.Bridge)
	if err != nil {
		return err
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
		defer func() {
			if err != nil {
				_ = d.deleteLink(link)
			}
		}()
	}
	if link.Attrs().Alias != d.aliasNetwork()+n.ID {
		if err := d.nl.LinkSetAlias(link, d.aliasNetwork()+n.ID); err != nil {
			return fmt.Errorf("bridge %s: alias: %w", n.Bridge, err)
		}
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

// ensurePort puts the host end of ep's pair, if it exists, on n's bridge
// and up: the kernel takes ports off a bridge that is deleted.
func (d *Driver) ensurePort(n state.Network, ep state.Endpoint) error {
	l, err := d.linkByName(ep.HostVeth)
	if err != nil || l == nil || l.Attrs().Alias != d.aliasEndpoint()+ep.ID {
		return err
	}
	br, err := d.linkByName(n.Bridge)
	if err != nil || br == nil {
		return err
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		d.cfg.Log.Info("putting an endpoint's veth back on its bridge", "veth", ep.HostVeth, "bridge", n.Bridge)
		if err := d.nl.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
			return fmt.Errorf("veth %s: onto bridge %s: %w", ep.HostVeth, n.Bridge, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := d.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("veth %s: up: %w", ep.HostVeth, err)
		}
	}
	return nil
}

// deleteLink removes l, looked up before; every link the driver deletes
// goes through here. One already gone counts as deleted: between the
// lookup and the delete, the kernel removes a veth pair whole when its
// container end's namespace goes, and Docker's cleanup or someone by hand
// removes links (issue 14: a DeleteEndpoint failed with "no such device").
func (d *Driver) deleteLink(l netlink.Link) error {
	if d.beforeLinkDel != nil {
		d.beforeLinkDel(l)
	}
	if err := d.nl.LinkDel(l); err != nil && !nlerr.IsNotFound(err) {
		return fmt.Errorf("link %s: delete: %w", l.Attrs().Name, err)
	}
	return nil
}

// createVeth makes an endpoint's pair: the host end on the bridge and up, the
// container end left in the host namespace for Docker to move. Both ends get
// the network's MTU, since Docker never sets it. The host end's alias records
// the endpoint's full ID.
func (d *Driver) createVeth(n state.Network, ep state.Endpoint) error {
	br, err := d.nl.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ep.HostVeth
	attrs.MTU = n.MTU
	attrs.MasterIndex = br.Attrs().Index
	mac, _ := net.ParseMAC(ep.MAC) // checked by CreateEndpoint
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: ep.PeerVeth, PeerMTU: uint32(n.MTU), PeerHardwareAddr: mac}
	if err := d.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s: create: %w", ep.HostVeth, err)
	}
	host, err := d.nl.LinkByName(ep.HostVeth)
	if err != nil {
		return fmt.Errorf("veth %s: %w", ep.HostVeth, err)
	}
	err = d.nl.LinkSetAlias(host, d.aliasEndpoint()+ep.ID)
	if err == nil {
		err = d.nl.LinkSetUp(host)
	}
	if err != nil {
		_ = d.deleteLink(host)
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
