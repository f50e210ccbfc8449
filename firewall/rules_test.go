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
		"one-network":                {"inst0001": {red}},
		"three-networks":             {"inst0001": {red, blue, green}},
		"network-deleted":            {"inst0001": {red, green}},
		"last-network-deleted":       {},
		"two-instances":              {"inst000a": {red}, "inst000b": {blue}},
		"two-instances-one-removed":  {"inst000b": {blue}},
		"earlier-instance-forgotten": {"99aabbcc": {blue}},
		"upgrade-from-one-chain":     {"inst0001": {red}},
		"upgrade-from-mangle-return": {"inst0001": {red}},
		"docker-20.10-then-felt":     {"inst0001": {red}},
		"docker-29-then-felt":        {"inst0001": {red}},
		"dns-off":                    {"inst0001": {red}},
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
			for inst, nets := range insts {
				f := &Firewall{instance: inst, dns: netip.MustParseAddr("169.254.53.53")}
				if dnsOff[name] {
					f.dns = netip.Addr{}
				}
				isolation, accepts, drops, inputs := f.rules(nets)
				// The isolation chain's drops go in any order, the
				// filter chain's accepts (in any order: an upgrade
				// keeps those it finds) above its drops.
				checkChain(t, IsolationChain, inst, listed[IsolationChain], isolation)
				checkChain(t, Chain, inst, listed[Chain], accepts, drops)
				checkChain(t, InputChain, inst, listed[InputChain], inputs)
			}
			for chain, rules := range listed {
				for _, r := range rules {
					if _, ok := insts[instanceOf(r)]; !ok {
						t.Errorf("%s: rule of no instance of the scenario: %q", chain, r)
					}
				}
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

// Each network's rules, as felt renders them: the words of every rule and
// the comment that tags it with the instance and bridge.
func TestRuleRendering(t *testing.T) {
	f := &Firewall{instance: "inst0001"}
	n := Network{Bridge: "felt-red", Pool: netip.MustParsePrefix("10.1.0.0/16")}
	tag := []string{"-m", "comment", "--comment", "felt:inst0001:felt-red"}
	r := func(words ...string) rule {
		target := words[len(words)-1]
		return append(append(slices.Clone(words[:len(words)-1]), tag...), "-j", target)
	}
	for _, c := range []struct {
		name      string
		got, want []rule
	}{
		{"accept", []rule{f.accept(n)}, []rule{r("-s", "10.1.0.0/16", "-d", "10.1.0.0/16", "ACCEPT")}},
		{"acceptBridged", []rule{f.acceptBridged(n)}, []rule{r("-i", "felt-red", "-o", "felt-red", "ACCEPT")}},
		{"isolation", f.isolation(n), []rule{
			r("-i", "felt-red", "!", "-o", "felt-red", "!", "-s", "10.1.0.0/16", "DROP"),
			r("-i", "felt-red", "!", "-o", "felt-red", "!", "-d", "10.1.0.0/16", "DROP"),
			r("!", "-i", "felt-red", "!", "-s", "10.1.0.0/16", "-d", "10.1.0.0/16", "DROP"),
			r("-i", "docker_gwbridge", "-d", "10.1.0.0/16", "DROP"),
			r("-i", "docker0", "-d", "10.1.0.0/16", "DROP"),
		}},
		{"filterDrops", f.filterDrops(n), []rule{
			r("-i", "felt-red", "DROP"),
			r("-d", "10.1.0.0/16", "DROP"),
		}},
	} {
		if !slices.EqualFunc(c.got, c.want, slices.Equal) {
			t.Errorf("%s:\n got %q\nwant %q", c.name, c.got, c.want)
		}
	}
	// A pool given with host bits set is rendered masked.
	loose := Network{Bridge: "felt-red", Pool: netip.MustParsePrefix("10.1.2.3/16")}
	if got, want := f.accept(loose), f.accept(n); !slices.Equal(got, want) {
		t.Errorf("accept of %s = %q, want %q", loose.Pool, got, want)
	}
}

func TestNetworkCheck(t *testing.T) {
	pool := netip.MustParsePrefix("10.1.0.0/16")
	for _, ok := range []Network{{"felt-red", pool}, {"a", pool}, {"felt-0123456789", pool}, {"br_x.1", pool}} {
		if err := ok.Check(); err != nil {
			t.Errorf("Check(%+v) = %v", ok, err)
		}
	}
	for _, c := range []struct {
		n    Network
		want string
	}{
		{Network{"", pool}, "bridge name"},
		{Network{"felt-0123456789a", pool}, "bridge name"}, // 16 characters
		{Network{`felt-a\b`, pool}, "bridge name"},
		{Network{`felt-a"b`, pool}, "bridge name"},
		{Network{"felt a", pool}, "bridge name"},
		{Network{"felt-red", netip.Prefix{}}, "pool"},
		{Network{"felt-red", netip.MustParsePrefix("fd00::/64")}, "pool"},
	} {
		if err := c.n.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check(%+v) = %v, want an error naming the %s", c.n, err, c.want)
		}
	}
}
