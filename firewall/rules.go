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

func (n Network) check() error {
	if len(n.Bridge) > maxBridge || !safeName.MatchString(n.Bridge) {
		return fmt.Errorf("firewall: bridge name %q: must be 1 to %d characters of A-Z a-z 0-9 . _ - (it is written into rule comments, which must list back exactly)", n.Bridge, maxBridge)
	}
	if !n.Pool.IsValid() || !n.Pool.Addr().Is4() {
		return fmt.Errorf("firewall: bridge %s: pool %v is not an IPv4 prefix", n.Bridge, n.Pool)
	}
	return nil
}

// rule is a rule specification: what follows the chain in -A, -C or -D,
// written in the order `iptables -S` lists it (see the golden files).
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

func samePool(n Network) []string {
	p := n.Pool.Masked().String()
	return []string{"-s", p, "-d", p}
}

// accept lets the pool's traffic to itself through the filter table, where
// Docker sets FORWARD's policy to DROP: between the bridge and the overlay
// device (other hosts' subnets), and across the bridge itself when
// br_netfilter passes bridged frames through iptables.
func (f *Firewall) accept(n Network) rule { return f.rule(n, samePool(n), "ACCEPT") }

// isolation is the network's part of the isolation chain: its own traffic
// returns (to be accepted later), then anything else leaving the bridge or
// bound for the pool is dropped.
func (f *Firewall) isolation(n Network) (head rule, tails []rule) {
	p := n.Pool.Masked().String()
	return f.rule(n, samePool(n), "RETURN"), []rule{
		f.rule(n, []string{"-i", n.Bridge}, "DROP"),
		f.rule(n, []string{"-d", p}, "DROP"),
	}
}
