package firewall

import (
	"crypto/sha256"
	"encoding/hex"
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
	if len(n.Bridge) <= len(BridgePrefix) || !strings.HasPrefix(n.Bridge, BridgePrefix) {
		return fmt.Errorf("firewall: bridge name %q: must begin with %q (the rules match felt's bridges by it)", n.Bridge, BridgePrefix)
	}
	if !n.Pool.IsValid() || !n.Pool.Addr().Is4() || n.Pool.Bits() == 0 {
		return fmt.Errorf("firewall: bridge %s: pool %v is not an IPv4 prefix of 1 to 32 bits (a set entry of 0 bits is not written)", n.Bridge, n.Pool)
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

// The rules are the same few whatever the networks (issue 14: with a
// handful of rules per network, every forwarded packet of the host, felt's
// or not, walked all of them: one TCP stream fell from 9.1 to 1.6 Gbit/s
// with 500 networks under iptables-nft). What tells the networks apart is
// in ipsets, each looked up by the kernel in a time that does not depend
// on the number of entries, filled per network (entries) and matched by
// `-m set`, which both iptables flavours have (xt_set; iptables-nft through
// its compat layer). Each instance has two:
//
//   - nets (hash:net,iface): (pool, bridge) for each network. With the
//     address and the interface of a packet, `src,src` asks whether the
//     source is in a pool of the bridge it came in on, `dst,src` the
//     destination, `src,dst` and `dst,dst` the same of the bridge it goes
//     out on. hash:net,net (two pools of one network) is not in every
//     kernel (nor here), and is not needed: felt's pools stay on their
//     bridge, so the bridge names the pool.
//   - pools (hash:net): each pool, `dst` asks whether the destination is
//     in a felt pool.
//
// and all share one list:set, allNets, holding every instance's nets set.
//
// Whether a packet came in on a felt bridge at all is `-i felt-+`
// (BridgePrefix), not a set: hash:net,iface does not hash the interface,
// so (any address, bridge) entries, one per bridge, all land in one bucket,
// which is searched entry by entry and refuses more than a few dozen. The
// wildcard matches every felt instance's bridges, so the rules that use it
// must be right for all of them: they look the packet up in allNets, every
// instance's networks.

// BridgePrefix begins the name of every felt bridge (driver.BridgeName),
// and of no other interface (felt's overlay devices are felt.N, feltu.…
// and feltw.…).
const BridgePrefix = "felt-"

// allNets is the list:set of every felt instance's nets set.
const allNets = "felt-nets"

// sets names an instance's ipsets.
type sets struct{ nets, pools string }

// setsOf returns the ipsets of instance. ipset names are at most 31
// bytes: a longer instance than felt's (8 hex digits, instance.Len) is
// hashed, and the longest name, with tempSuffix, stays below that.
func setsOf(instance string) sets {
	id := instance
	if len(id) > 12 {
		sum := sha256.Sum256([]byte(instance))
		id = hex.EncodeToString(sum[:6])
	}
	p := "felt-" + id + "-"
	return sets{nets: p + "nets", pools: p + "pools"}
}

func (s sets) all() []string { return []string{s.nets, s.pools} }

// entry is one member of one of felt's sets.
type entry struct {
	set   string
	net   netip.Prefix // masked
	iface string       // "" in the pools set (hash:net)
}

// entries are the set members of nets, each once, pools before nets (the
// order of a safe write, see delta).
func (f *Firewall) entries(nets []Network) []entry {
	s := setsOf(f.instance)
	var pools, own []entry
	for _, n := range nets {
		p := n.Pool.Masked()
		pools = append(pools, entry{s.pools, p, ""})
		own = append(own, entry{s.nets, p, n.Bridge})
	}
	return uniq(append(pools, own...))
}

// uniq keeps the first of equal entries, in order.
func uniq(es []entry) []entry {
	seen := make(map[entry]bool, len(es))
	out := es[:0:0]
	for _, e := range es {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}

// comment marks a rule as this instance's; the rules are for all its
// networks ("/" is in no interface name, so no bridge's comment of the
// earlier per-network rules reads the same).
func (f *Firewall) comment() []string {
	return []string{"-m", "comment", "--comment", f.tag() + "/all"}
}

func (f *Firewall) rule(target string, match ...[]string) rule {
	var r rule
	for _, m := range match {
		r = append(r, m...)
	}
	return append(append(r, f.comment()...), "-j", target)
}

func inSet(name, dirs string) []string { return []string{"-m", "set", "--match-set", name, dirs} }
func notInSet(name, dirs string) []string {
	return []string{"-m", "set", "!", "--match-set", name, dirs}
}

// fromBridge matches what comes in on any felt bridge (see BridgePrefix).
var fromBridge = []string{"-i", BridgePrefix + "+"}

// Frames a bridge forwards between two of its own ports, which pass
// through iptables with br_netfilter (Docker loads it and sets
// bridge-nf-call-iptables=1), as `-i BRIDGE -o BRIDGE`: among them
// broadcast to 255.255.255.255 and multicast (mDNS, 224.0.0.251), whose
// destination is in no pool. They go back out to the bridge's own ports
// only, so they never leave the felt network, whatever their addresses.
// The per-network rules said it with `! -o BRIDGE`; iptables cannot
// compare the two interfaces of a packet, but xt_physdev tells a frame
// being bridged from a packet being routed.
var (
	bridged    = []string{"-m", "physdev", "--physdev-is-bridged"}
	notBridged = []string{"-m", "physdev", "!", "--physdev-is-bridged"}
)

// dnsAccepts let the containers of felt's bridges reach felt's DNS address
// on port 53 (package names) through hosts whose INPUT policy drops.
func (f *Firewall) dnsAccepts() []rule {
	if !f.dns.IsValid() {
		return nil
	}
	var out []rule
	for _, proto := range []string{"udp", "tcp"} {
		out = append(out, f.rule("ACCEPT", []string{"-d", netip.PrefixFrom(f.dns, 32).String()}, fromBridge, []string{"-p", proto, "-m", proto, "--dport", "53"}))
	}
	return out
}

// accepts let the pools' traffic to themselves through the filter table,
// where Docker sets FORWARD's policy to DROP: leaving a bridge with both
// addresses in its pool (to the overlay device, other hosts' subnets),
// entering a bridge with both in its pool, and what a felt bridge forwards
// to itself (see bridged; before, `-i BRIDGE -o BRIDGE`, which also took
// a packet routed back out the bridge it came in on: with both addresses
// in the pool, the first accept takes it).
func (f *Firewall) accepts() []rule {
	s := setsOf(f.instance)
	return []rule{
		f.rule("ACCEPT", inSet(s.nets, "src,src"), inSet(s.nets, "dst,src")),
		f.rule("ACCEPT", inSet(s.nets, "src,dst"), inSet(s.nets, "dst,dst")),
		f.rule("ACCEPT", fromBridge, bridged),
	}
}

// Interfaces of Docker's that never carry a felt pool's own traffic but do
// carry containers that could forge a source in it: docker_gwbridge (every
// felt container's default route) and the default bridge network's.
var dockerBridges = []string{"docker_gwbridge", "docker0"}

// isolation is the isolation chain: drops only, each matching nothing of
// the pools' own traffic (both addresses in the pool, coming from the
// bridge, felt's overlay devices or the underlay), so no other network's
// traffic either (pools never overlap). They need no order among
// themselves nor with another instance's, and there is no RETURN for the
// pools' own traffic: such a RETURN, first matching on addresses, let a
// container of any network (or of a Docker bridge) that forged a source in
// the pool (CAP_NET_RAW, in Docker's defaults, is enough) past every later
// drop. None matches a frame a bridge forwards to itself (see bridged).
//
// What they drop, for a packet in on interface I, out on O:
//
//   - in on a felt bridge, and not being bridged back to it: a source
//     outside the bridge's pool (a forged one: anti-spoofing), and a
//     destination outside it (another network, the world). These look the
//     packet up in every instance's networks (allNets): `-i felt-+` also
//     matches the bridges of another felt in the namespace;
//   - bound for a felt pool, unless from the pool's bridge (the first
//     covers that): a source outside the pool of the bridge it goes out
//     on, and any packet that does not go out on the pool's bridge. The
//     latter is new with the sets (the per-network rules let a packet of
//     the pool pass from one interface that is not its bridge to another,
//     say from the underlay into an overlay device): felt never routes a
//     pool's traffic through a host other than between the pool's bridge
//     and the overlay, and letting it pass let a forged source of the pool
//     transit;
//   - bound for a felt pool from Docker's bridges, whatever the source.
func (f *Firewall) isolation() []rule {
	s := setsOf(f.instance)
	toPool := inSet(s.pools, "dst")
	notFromItsBridge := notInSet(s.nets, "dst,src")
	drops := []rule{
		f.rule("DROP", fromBridge, notInSet(allNets, "src,src"), notBridged),
		f.rule("DROP", fromBridge, notInSet(allNets, "dst,src"), notBridged),
		f.rule("DROP", toPool, notFromItsBridge, notInSet(s.nets, "src,dst")),
		f.rule("DROP", toPool, notFromItsBridge, notInSet(s.nets, "dst,dst")),
	}
	for _, br := range dockerBridges {
		drops = append(drops, f.rule("DROP", []string{"-i", br}, toPool))
	}
	return drops
}

// filterDrops are the filter chain's drops after its accepts (a second
// layer, see apply): the pools' own traffic was accepted above them. The
// first matches other instances' bridges too, whose accepts are above it
// as well (every instance's accepts are inserted on top, its drops added
// at the bottom).
func (f *Firewall) filterDrops() []rule {
	return []rule{
		f.rule("DROP", fromBridge),
		f.rule("DROP", inSet(setsOf(f.instance).pools, "dst")),
	}
}
