package plugin

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/ipam"
)

// hostNetworks lists the networks of this host's IPv4 addresses, for the
// IPAM to refuse pools that overlap them. Links felt made are flagged: by
// their alias (felt:<instance>:…), or by name for those made before
// aliases (felt-… bridges, felt.<VNI> VTEPs, feltu.… TUNs).
func hostNetworks(nl *netlink.Handle) func(context.Context) ([]ipam.HostNetwork, error) {
	return func(context.Context) ([]ipam.HostNetwork, error) {
		addrs, err := nl.AddrList(nil, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("addresses: %w", err)
		}
		links := map[int]netlink.Link{}
		var out []ipam.HostNetwork
		for _, a := range addrs {
			if a.IPNet == nil {
				continue
			}
			ip, ok := netip.AddrFromSlice(a.IPNet.IP.To4())
			if !ok {
				continue
			}
			bits, _ := a.IPNet.Mask.Size()
			n := ipam.HostNetwork{Prefix: netip.PrefixFrom(ip, bits).Masked(), Iface: fmt.Sprintf("index %d", a.LinkIndex)}
			l, seen := links[a.LinkIndex]
			if !seen {
				l, _ = nl.LinkByIndex(a.LinkIndex)
				links[a.LinkIndex] = l
			}
			if l != nil {
				at := l.Attrs()
				n.Iface = at.Name
				n.Felt = strings.HasPrefix(at.Alias, "felt:") || strings.HasPrefix(at.Name, "felt-") ||
					strings.HasPrefix(at.Name, "felt.") || strings.HasPrefix(at.Name, "feltu.")
			}
			out = append(out, n)
		}
		return out, nil
	}
}
