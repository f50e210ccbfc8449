package overlay

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/overlay/internal/kernel"
)

// This file is what the tunnel backends (udp, wireguard) share: a device
// per network that holds this host's subnet's .0/32 and carries packets to
// peers on a UDP port, with a route per peer subnet into it.

// CompleteTunnel checks n for a tunnel backend called backend and fills in
// what the driver normally passes: the port (defaultPort when 0) and the
// MTU (host's underlay MTU minus overhead when 0; the driver always passes
// one, so this only guards a zero Network).
func CompleteTunnel(backend string, n Network, defaultPort, overhead int, host Host) (Network, error) {
	switch {
	case !n.Pool.IsValid() || !n.Pool.Addr().Is4():
		return n, fmt.Errorf("%s: pool %q is not an IPv4 prefix", backend, n.Pool)
	case !n.Subnet.IsValid() || !n.Subnet.Addr().Is4() || !kernel.Within(n.Subnet, n.Pool):
		return n, fmt.Errorf("%s %s: this host's subnet %q is not an IPv4 prefix inside the pool", backend, n.Pool, n.Subnet)
	case n.Port < 0 || n.Port > 0xffff:
		return n, fmt.Errorf("%s %s: port %d is outside 1-65535", backend, n.Pool, n.Port)
	}
	if n.Port == 0 {
		n.Port = defaultPort
	}
	if n.MTU <= 0 {
		if host == nil {
			return n, fmt.Errorf("%s %s: no MTU given and no underlay to derive it from", backend, n.Pool)
		}
		mtu, err := host.MTU()
		if err != nil {
			return n, fmt.Errorf("%s %s: underlay MTU: %w", backend, n.Pool, err)
		}
		n.MTU = mtu - overhead
	}
	return n, nil
}

// ConfigureTunnelDevice marks link as n's (OwnerAlias of instance), sets
// its MTU, leaves <subnet .0>/32 as its only IPv4 address and sets it up.
// The address is the source the kernel picks for this host's own traffic
// to peer subnets: inside the pool and this host's subnet, so peers accept
// it (WireGuard: it is within the allowed IPs they have for this host) and
// replies come back.
func ConfigureTunnelDevice(nl *netlink.Handle, link netlink.Link, instance string, n Network) error {
	if err := SetOwner(nl, link, OwnerAlias(instance, n.ID)); err != nil {
		return err
	}
	if link.Attrs().MTU != n.MTU {
		if err := nl.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("mtu %d: %w", n.MTU, err)
		}
	}
	if err := kernel.OnlyAddr(nl, link, netip.PrefixFrom(n.Subnet.Masked().Addr(), 32)); err != nil {
		return err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("up: %w", err)
		}
	}
	return nil
}
