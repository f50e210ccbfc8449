package firewall

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The golden files (golden_test.go, which needs root) hold what iptables
// lists after each scenario. Here, without root, the rules felt renders for
// the networks of each scenario are matched against them, read back with the
// listing parser felt uses on a live chain: so every golden file is checked
// to hold exactly felt's rules for its networks, and the parser to read every
// line iptables wrote into them.
func TestRenderedRulesMatchGolden(t *testing.T) {
	var (
		red   = Network{Bridge: "felt-red", Pool: netip.MustParsePrefix("10.1.0.0/16")}
		blue  = Network{Bridge: "felt-blue", Pool: netip.MustParsePrefix("10.2.0.0/16")}
		green = Network{Bridge: "felt-green", Pool: netip.MustParsePrefix("10.3.0.0/24")}
	)
	// The networks of each instance at the end of each scenario.
	scenarios := map[string]map[string][]Network{
		"one-network":                    {"inst0001": {red}},
		"three-networks":                 {"inst0001": {red, blue, green}},
		"network-deleted":                {"inst0001": {red, green}},
		"last-network-deleted":           {},
		"two-instances":                  {"inst000a": {red}, "inst000b": {blue}},
		"two-instances-one-removed":      {"inst000b": {blue}},
		"earlier-instance-forgotten":     {"99aabbcc": {blue}},
		"upgrade-from-one-chain":         {"inst0001": {red}},
		"upgrade-from-mangle-return":     {"inst0001": {red}},
		"upgrade-from-per-network-rules": {"inst0001": {red, blue}},
		"docker-20.10-then-felt":         {"inst0001": {red}},
		"docker-29-then-felt":            {"inst0001": {red}},
		"dns-off":                        {"inst0001": {red}},
	}
	// Every scenario runs with felt's DNS at 169.254.53.53 (FELT-INPUT)
	// but these.
	dnsOff := map[string]bool{"dns-off": true}
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".golden")
		t.Run(name, func(t *testing.T) {
			insts, ok := scenarios[name]
			if !ok {
				t.Fatalf("%s: no networks given for this scenario here", file)
			}
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			listed := goldenRules(t, string(b))
			ipsets := goldenSets(string(b))
			for inst, nets := range insts {
				f := &Firewall{instance: inst, dns: netip.MustParseAddr("169.254.53.53")}
				if dnsOff[name] {
					f.dns = netip.Addr{}
				}
				isolation, accepts, drops, inputs := f.rules()
				// The isolation chain's drops go in any order, the
				// filter chain's accepts (in any order: an upgrade
				// keeps those it finds) above its drops.
				checkChain(t, IsolationChain, inst, listed[IsolationChain], isolation)
				checkChain(t, Chain, inst, listed[Chain], accepts, drops)
				checkChain(t, InputChain, inst, listed[InputChain], inputs)
				// The sets hold the networks' entries, each once.
				var want []string
				for _, e := range f.entries(nets) {
					want = append(want, e.String())
				}
				member := allNets + " " + setsOf(inst).nets
				want = append(want, member)
				slices.Sort(want)
				var got []string
				for _, name := range setsOf(inst).all() {
					got = append(got, ipsets[name]...)
				}
				if slices.Contains(ipsets[allNets], member) {
					got = append(got, member)
				}
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("sets of instance %s:\n%s\nwant\n%s", inst, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			}
			for chain, rules := range listed {
				for _, r := range rules {
					if _, ok := insts[instanceOf(r)]; !ok {
						t.Errorf("%s: rule of no instance of the scenario: %q", chain, r)
					}
				}
			}
			// No set is left of an instance without networks, nor a
			// temporary copy; the list holds the instances' sets only.
		sets:
			for name, members := range ipsets {
				if name == allNets && len(insts) > 0 && len(members) == len(insts) {
					continue
				}
				for inst := range insts {
					if slices.Contains(setsOf(inst).all(), name) {
						continue sets
					}
				}
				t.Errorf("set %s of no instance of the scenario", name)
			}
		})
	}
}

// goldenRules parses the rules listed in a golden file, by felt chain.
func goldenRules(t *testing.T, golden string) map[string][]rule {
	t.Helper()
	out := map[string][]rule{}
	for _, line := range strings.Split(golden, "\n") {
		for _, chain := range []string{Chain, IsolationChain, InputChain} {
			args, ok, err := ruleArgs(line, chain)
			if err != nil {
				t.Fatalf("listing line %q: %v", line, err)
			}
			if ok {
				out[chain] = append(out[chain], rule(args))
			}
		}
	}
	return out
}

// goldenSets parses the sets listed in a golden file (dumpSets): each
// set's entries, as entry.String renders them.
func goldenSets(golden string) map[string][]string {
	out := map[string][]string{}
	set := ""
	for _, line := range strings.Split(golden, "\n") {
		switch {
		case strings.HasPrefix(line, "# ipset "):
			set = strings.Fields(line)[2]
			out[set] = nil
		case strings.HasPrefix(line, "#"):
			set = ""
		case set != "" && line != "":
			out[set] = append(out[set], set+" "+line)
		}
	}
	return out
}

func instanceOf(r rule) string {
	inst, _, _ := strings.Cut(strings.TrimPrefix(commentOf(r), "felt:"), ":")
	return inst
}

func sortedKeys(rules []rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, r.key())
	}
	slices.Sort(out)
	return out
}

// checkChain compares inst's rules listed in chain with groups of wanted
// rules: the listing holds each group's rules, in any order within it, one
// group after the other.
func checkChain(t *testing.T, chain, inst string, listed []rule, groups ...[]rule) {
	t.Helper()
	var got []rule
	for _, r := range listed {
		if instanceOf(r) == inst {
			got = append(got, r)
		}
	}
	show := func(ks []string) string { return strings.ReplaceAll(strings.Join(ks, "\n"), "\x00", " ") }
	for i, want := range groups {
		n := min(len(want), len(got))
		if g, w := sortedKeys(got[:n]), sortedKeys(want); !slices.Equal(g, w) {
			t.Errorf("%s, instance %s, group %d: listed rules (as sorted words)\n%s\nwant\n%s", chain, inst, i, show(g), show(w))
		}
		got = got[n:]
	}
	if len(got) > 0 {
		t.Errorf("%s, instance %s: rules listed beyond those wanted: %q", chain, inst, got)
	}
}

// The rules, as felt renders them: the same few whatever the networks, the
// words of every rule and the comment that tags it with the instance; and
// a network's set entries.
func TestRuleRendering(t *testing.T) {
	f := &Firewall{instance: "inst0001", dns: netip.MustParseAddr("169.254.53.53")}
	tag := []string{"-m", "comment", "--comment", "felt:inst0001:/all"}
	r := func(words ...string) rule {
		target := words[len(words)-1]
		return append(append(slices.Clone(words[:len(words)-1]), tag...), "-j", target)
	}
	const (
		nets  = "felt-inst0001-nets"
		pools = "felt-inst0001-pools"
		all   = "felt-nets"
	)
	set := func(name, dirs string) []string { return []string{"-m", "set", "--match-set", name, dirs} }
	not := func(name, dirs string) []string { return []string{"-m", "set", "!", "--match-set", name, dirs} }
	w := func(parts ...any) []string {
		var out []string
		for _, p := range parts {
			switch p := p.(type) {
			case string:
				out = append(out, p)
			case []string:
				out = append(out, p...)
			}
		}
		return out
	}
	fromBridge := []string{"-i", "felt-+"}
	notBridged := []string{"-m", "physdev", "!", "--physdev-is-bridged"}
	isolation, accepts, drops, inputs := f.rules()
	for _, c := range []struct {
		name      string
		got, want []rule
	}{
		{"isolation", isolation, []rule{
			r(w(fromBridge, not(all, "src,src"), notBridged, "DROP")...),
			r(w(fromBridge, not(all, "dst,src"), notBridged, "DROP")...),
			r(w(set(pools, "dst"), not(nets, "dst,src"), not(nets, "src,dst"), "DROP")...),
			r(w(set(pools, "dst"), not(nets, "dst,src"), not(nets, "dst,dst"), "DROP")...),
			r(w("-i", "docker_gwbridge", set(pools, "dst"), "DROP")...),
			r(w("-i", "docker0", set(pools, "dst"), "DROP")...),
		}},
		{"accepts", accepts, []rule{
			r(w(set(nets, "src,src"), set(nets, "dst,src"), "ACCEPT")...),
			r(w(set(nets, "src,dst"), set(nets, "dst,dst"), "ACCEPT")...),
			r(w(fromBridge, "-m", "physdev", "--physdev-is-bridged", "ACCEPT")...),
		}},
		{"drops", drops, []rule{
			r(w(fromBridge, "DROP")...),
			r(w(set(pools, "dst"), "DROP")...),
		}},
		{"inputs", inputs, []rule{
			r(w("-d", "169.254.53.53/32", fromBridge, "-p", "udp", "-m", "udp", "--dport", "53", "ACCEPT")...),
			r(w("-d", "169.254.53.53/32", fromBridge, "-p", "tcp", "-m", "tcp", "--dport", "53", "ACCEPT")...),
		}},
	} {
		if !slices.EqualFunc(c.got, c.want, slices.Equal) {
			t.Errorf("%s:\n got %q\nwant %q", c.name, c.got, c.want)
		}
	}
	f.dns = netip.Addr{}
	if _, _, _, inputs := f.rules(); len(inputs) != 0 {
		t.Errorf("FELT-INPUT rules without felt's DNS: %q", inputs)
	}
	// A network's entries: its pool (masked: given with host bits set),
	// its pool with its bridge; pools first (delta writes them in this
	// order). A second pool on the same bridge has entries of its own.
	n := Network{Bridge: "felt-red", Pool: netip.MustParsePrefix("10.1.2.3/16")}
	n2 := Network{Bridge: "felt-red", Pool: netip.MustParsePrefix("10.9.0.0/24")}
	var got []string
	for _, e := range f.entries([]Network{n, n2, n}) {
		got = append(got, e.String())
	}
	want := []string{
		pools + " 10.1.0.0/16", pools + " 10.9.0.0/24",
		nets + " 10.1.0.0/16,felt-red", nets + " 10.9.0.0/24,felt-red",
	}
	if !slices.Equal(got, want) {
		t.Errorf("entries:\n got %q\nwant %q", got, want)
	}
}

// ipset names are at most 31 bytes, whatever the instance.
func TestSetNames(t *testing.T) {
	for _, inst := range []string{"0a1b2c3d", strings.Repeat("x", 64)} {
		s := setsOf(inst)
		for _, name := range s.all() {
			if len(name+tempSuffix) > 31 {
				t.Errorf("instance %q: set name %q too long", inst, name+tempSuffix)
			}
		}
		if other := setsOf(inst + "y"); other.nets == s.nets {
			t.Errorf("instances %q and %q share set %s", inst, inst+"y", s.nets)
		}
	}
}

func TestNetworkCheck(t *testing.T) {
	pool := netip.MustParsePrefix("10.1.0.0/16")
	for _, ok := range []Network{{"felt-red", pool}, {"felt-a", pool}, {"felt-0123456789", pool}, {"felt-br_x.1", pool}} {
		if err := ok.Check(); err != nil {
			t.Errorf("Check(%+v) = %v", ok, err)
		}
	}
	for _, c := range []struct {
		n    Network
		want string
	}{
		{Network{"", pool}, "bridge name"},
		{Network{"br-red", pool}, "felt-"},
		{Network{"felt-", pool}, "felt-"},
		{Network{"feltu.0a010000", pool}, "felt-"},         // felt's udp device
		{Network{"felt-0123456789a", pool}, "bridge name"}, // 16 characters
		{Network{`felt-a\b`, pool}, "bridge name"},
		{Network{`felt-a"b`, pool}, "bridge name"},
		{Network{"felt a", pool}, "bridge name"},
		{Network{"felt-red", netip.Prefix{}}, "pool"},
		{Network{"felt-red", netip.MustParsePrefix("fd00::/64")}, "pool"},
		{Network{"felt-red", netip.MustParsePrefix("0.0.0.0/0")}, "pool"},
	} {
		if err := c.n.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check(%+v) = %v, want an error naming the %s", c.n, err, c.want)
		}
	}
}
