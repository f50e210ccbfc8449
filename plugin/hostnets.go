package plugin

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/ipam"
)

// legacyFeltName matches the names felt gave its links before it marked them
// with aliases: bridges felt-<10 characters of the network ID>, VTEPs
// felt.<VNI>, TUNs feltu.<pool address in hex>. Exact shapes, so a bridge
// someone named felt-something (docker network create -o
// com.docker.network.bridge.name=felt-lab) is not taken for felt's.
var legacyFeltName = regexp.MustCompile(`^(felt-[0-9a-f]{10}|felt\.[0-9]{1,8}|feltu\.[0-9a-f]{8})$`)

// hostNetworks lists the networks of this host's IPv4 addresses that
// overlap pool, for the IPAM to refuse pools that overlap them. Only their
// links are looked up (one request each): with hundreds of felt networks,
// looking up every address's link made each RequestPool cost a request
// per bridge. Links of this felt instance are
// flagged (the IPAM lets a pool hold them: they are its own, left from
// before a restart): by their alias (felt:<instance>:…), or, without an
// alias, by a name of the shape felt gave links before aliases. Another
// instance's links (a second felt on the host, or an earlier felt whose
// state directory was wiped) are not this felt's: a pool over them would
// put two bridges on the same addresses.
func hostNetworks(nl *netlink.Handle, instance string) func(context.Context, netip.Prefix) ([]ipam.HostNetwork, error) {
	ours := "felt:" + instance + ":"
	return func(_ context.Context, pool netip.Prefix) ([]ipam.HostNetwork, error) {
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
			if !n.Prefix.Overlaps(pool) {
				continue
			}
			l, seen := links[a.LinkIndex]
			if !seen {
				l, _ = nl.LinkByIndex(a.LinkIndex)
				links[a.LinkIndex] = l
			}
			if l != nil {
				at := l.Attrs()
				n.Iface = at.Name
				n.Felt = strings.HasPrefix(at.Alias, ours) || (at.Alias == "" && legacyFeltName.MatchString(at.Name))
			}
			out = append(out, n)
		}
		return out, nil
	}
}
