package firewall

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// Network is what the rules of one felt network depend on.
type Network struct {
	Bridge string
	Pool   netip.Prefix
}

// safeName is the alphabet of what felt writes into rule comments (its
// instance and bridge names): iptables lists it back as written, so the
// listing of a rule deletes it. A name outside it is refused, not escaped.
var safeName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// maxBridge is the longest interface name Linux takes (IFNAMSIZ - 1).
const maxBridge = 15

// Check reports why Sync would refuse n (its bridge name or pool), so
// that a caller holding one bad entry among good ones (old or tampered
// state) can leave it out instead of having the whole list refused.
func (n Network) Check() error { return n.check() }

func (n Network) check() error {
	if len(n.Bridge) > maxBridge || !safeName.MatchString(n.Bridge) {
		return fmt.Errorf("firewall: bridge name %q: must be 1 to %d characters of A-Z a-z 0-9 . _ - (it is written into rule comments, which must list back exactly)", n.Bridge, maxBridge)
	}
	if !n.Pool.IsValid() || !n.Pool.Addr().Is4() {
		return fmt.Errorf("firewall: bridge %s: pool %v is not an IPv4 prefix", n.Bridge, n.Pool)
	}
	return nil
}

// rule is a rule specification: what follows the chain in -A, -C or -D.
// `iptables -S` may list its words in another order (the isolation drops'
// matches are; see the golden files and key).
type rule []string

// key compares a listed rule with a wanted one as multisets of words, so a
// version of iptables that lists matches in another order still finds
// felt's rules instead of deleting and adding them at every resync. felt's
// rules never differ only in the order of their words.
func (r rule) key() string {
	words := slices.Clone(r)
	slices.Sort(words)
	return strings.Join(words, "\x00")
}

func (f *Firewall) comment(n Network) []string {
	return []string{"-m", "comment", "--comment", f.tag() + n.Bridge}
}

func (f *Firewall) rule(n Network, match []string, target string) rule {
	r := append(append([]string{}, match...), f.comment(n)...)
	return append(r, "-j", target)
}

// dnsAccepts let the containers of n reach felt's DNS address on port 53
// (package names) through hosts whose INPUT policy drops.
func (f *Firewall) dnsAccepts(n Network) []rule {
	if !f.dns.IsValid() {
		return nil
	}
	var out []rule
	for _, proto := range []string{"udp", "tcp"} {
		out = append(out, f.rule(n, []string{"-d", netip.PrefixFrom(f.dns, 32).String(), "-i", n.Bridge, "-p", proto, "-m", proto, "--dport", "53"}, "ACCEPT"))
	}
	return out
}

func samePool(n Network) []string {
	p := n.Pool.Masked().String()
	return []string{"-s", p, "-d", p}
}

// accept lets the pool's traffic to itself through the filter table, where
// Docker sets FORWARD's policy to DROP: between the bridge and the overlay
// device (other hosts' subnets), and across the bridge itself when
// br_netfilter passes bridged frames through iptables.
func (f *Firewall) accept(n Network) rule { return f.rule(n, samePool(n), "ACCEPT") }

// acceptBridged lets through everything the bridge forwards to itself:
// with br_netfilter, frames bridged between two of its ports reach filter
// FORWARD as `-i BRIDGE -o BRIDGE`, also broadcast to 255.255.255.255 and
// multicast (mDNS, 224.0.0.251), whose destination is not in the pool.
// `-o BRIDGE` means the packet goes back out to this network's own ports:
// it never leaves the felt network, so this opens no path between networks.
func (f *Firewall) acceptBridged(n Network) rule {
	return f.rule(n, []string{"-i", n.Bridge, "-o", n.Bridge}, "ACCEPT")
}

// Interfaces of Docker's that never carry a felt pool's own traffic but do
// carry containers that could forge a source in it: docker_gwbridge (every
// felt container's default route) and the default bridge network's.
var dockerBridges = []string{"docker_gwbridge", "docker0"}

// isolation is the network's part of the isolation chain: drops, each of
// which matches only traffic that is not the pool's own (both addresses in
// the pool, coming from the bridge, felt's overlay devices or the
// underlay), so no other network's traffic either (pools never overlap).
// They need no order among themselves or with other networks' rules, and
// there is no RETURN for the pool's own traffic: such a RETURN, first
// matching on addresses, let a container of any network (or of a Docker
// bridge) that forged a source in the pool (CAP_NET_RAW, in Docker's
// defaults, is enough) past every later network's drops.
//
// None matches what the bridge forwards back to itself (`-i BRIDGE -o
// BRIDGE`: with br_netfilter, frames bridged between two of its ports,
// among them broadcast to 255.255.255.255 and multicast such as mDNS, whose
// destination is outside the pool). Such traffic goes out to this
// network's own ports only, so it never leaves the felt network, whatever
// its addresses. This is done with `! -o BRIDGE` / `! -i BRIDGE` in the
// drops, not with a RETURN, so that the drops stay free of order; a RETURN
// on `-i BRIDGE -o BRIDGE` would be safe too (it matches nothing bound for
// another bridge, so it skips none of another network's drops that could
// apply), but it would need to sit above the drops.
func (f *Firewall) isolation(n Network) []rule {
	p := n.Pool.Masked().String()
	notBack := []string{"!", "-o", n.Bridge}
	drops := []rule{
		// Leaving the bridge: only the pool's traffic to itself.
		f.rule(n, append([]string{"-i", n.Bridge}, append(notBack, "!", "-s", p)...), "DROP"),
		f.rule(n, append([]string{"-i", n.Bridge}, append(notBack, "!", "-d", p)...), "DROP"),
		// Bound for the pool: only from the pool (from the bridge itself,
		// the first drop covers what leaves it)...
		f.rule(n, []string{"!", "-i", n.Bridge, "!", "-s", p, "-d", p}, "DROP"),
	}
	// ...and never from Docker's bridges, whatever the source says.
	for _, br := range dockerBridges {
		drops = append(drops, f.rule(n, []string{"-i", br, "-d", p}, "DROP"))
	}
	return drops
}

// filterDrops are the filter chain's drops after its accepts (a second
// layer, see apply): the pool's own traffic was accepted above them.
func (f *Firewall) filterDrops(n Network) []rule {
	return []rule{
		f.rule(n, []string{"-i", n.Bridge}, "DROP"),
		f.rule(n, []string{"-d", n.Pool.Masked().String()}, "DROP"),
	}
}
