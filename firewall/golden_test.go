package firewall_test

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/testkit/netns"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from what the tests produce")

// dump is felt's part of the ruleset as `iptables -S` lists it: the
// FORWARD and INPUT chains holding its jumps and its own chains, mangle
// then filter.
func dump(t *testing.T, ns *netns.NS, path string) string {
	t.Helper()
	var b strings.Builder
	for _, c := range []struct{ table, chain string }{
		{"mangle", "FORWARD"}, {"mangle", firewall.IsolationChain},
		{"filter", "FORWARD"}, {"filter", firewall.Chain},
		{"filter", "INPUT"}, {"filter", firewall.InputChain},
	} {
		b.WriteString("# -t " + c.table + " -S " + c.chain + "\n")
		out, err := ns.Run(path, "-w", "-t", c.table, "-S", c.chain)
		if err != nil {
			b.WriteString("(no chain)\n")
			continue
		}
		b.WriteString(out + "\n") // ns.Run trims the listing's last newline
	}
	b.WriteString(dumpSets(t, ns))
	return b.String()
}

// dumpSets lists every ipset of the namespace (felt's, and what is left of
// them), by name, with its type and its entries sorted, as
// "# ipset NAME TYPE" followed by one "ADDRESS/BITS[,IFACE]" line each.
func dumpSets(t testing.TB, ns *netns.NS) string {
	t.Helper()
	var sets []netlink.IPSetResult
	if err := ns.Do(func() (err error) { sets, err = netlink.IpsetListAll(); return err }); err != nil {
		t.Fatalf("ipset list: %v", err)
	}
	slices.SortFunc(sets, func(a, b netlink.IPSetResult) int { return strings.Compare(a.SetName, b.SetName) })
	var b strings.Builder
	for _, s := range sets {
		fmt.Fprintf(&b, "# ipset %s %s\n", s.SetName, s.TypeName)
		var lines []string
		if s.TypeName == "list:set" {
			for _, m := range sets {
				var in bool
				if err := ns.Do(func() (err error) { in, err = firewall.InList(s.SetName, m.SetName); return err }); err != nil {
					t.Fatalf("ipset test %s %s: %v", s.SetName, m.SetName, err)
				}
				if in {
					lines = append(lines, m.SetName)
				}
			}
		}
		for _, e := range s.Entries {
			if s.TypeName == "list:set" {
				continue
			}
			l := fmt.Sprintf("%s/%d", e.IP, e.CIDR)
			if e.IFace != "" {
				l += "," + e.IFace
			}
			lines = append(lines, l)
		}
		slices.Sort(lines)
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// golden compares got with testdata/name.golden, or rewrites the file
// with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("rules differ from %s (run with -update if the change is intended)\ngot:\n%s\nwant:\n%s", file, got, want)
	}
}

var greenNet = firewall.Network{Bridge: "felt-green", Pool: netip.MustParsePrefix("10.3.0.0/24")}

// The rules of a set of networks, as libnetwork's bridge driver tests its
// own: the listing equals a golden file, the same for both iptables
// flavours (which is also what lets felt read back what it wrote).
func TestRulesGolden(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, ns *netns.NS, path string)
	}{
		{"one-network", func(t *testing.T, ns *netns.NS, path string) {
			mustSync(t, newFirewall(t, ns, path, "inst0001"), redNet)
		}},
		{"three-networks", func(t *testing.T, ns *netns.NS, path string) {
			mustSync(t, newFirewall(t, ns, path, "inst0001"), redNet, blueNet, greenNet)
		}},
		{"network-deleted", func(t *testing.T, ns *netns.NS, path string) {
			fw := newFirewall(t, ns, path, "inst0001")
			mustSync(t, fw, redNet, blueNet, greenNet)
			mustSync(t, fw, redNet, greenNet)
		}},
		{"last-network-deleted", func(t *testing.T, ns *netns.NS, path string) {
			fw := newFirewall(t, ns, path, "inst0001")
			mustSync(t, fw, redNet)
			mustSync(t, fw)
		}},
		{"two-instances", func(t *testing.T, ns *netns.NS, path string) {
			a, b := newFirewall(t, ns, path, "inst000a"), newFirewall(t, ns, path, "inst000b")
			mustSync(t, a, redNet)
			mustSync(t, b, blueNet)
			mustSync(t, a, redNet) // a leaves b's rules alone
		}},
		{"two-instances-one-removed", func(t *testing.T, ns *netns.NS, path string) {
			a, b := newFirewall(t, ns, path, "inst000a"), newFirewall(t, ns, path, "inst000b")
			mustSync(t, a, redNet)
			mustSync(t, b, blueNet)
			if err := a.Remove(); err != nil {
				t.Fatal(err)
			}
		}},
		{"earlier-instance-forgotten", func(t *testing.T, ns *netns.NS, path string) {
			old, cur := newFirewall(t, ns, path, "0a1b2c3d"), newFirewall(t, ns, path, "99aabbcc")
			mustSync(t, old, redNet)
			mustSync(t, cur, blueNet)
			if err := cur.ForgetInstance("0a1b2c3d"); err != nil {
				t.Fatal(err)
			}
		}},
		{"upgrade-from-one-chain", func(t *testing.T, ns *netns.NS, path string) {
			// What felt before the mangle chain left: accepts and drops in
			// filter FELT, jumped to first from FORWARD.
			d := docker{l: &lab{host: ns}, t: t, path: path}
			d.run("-N", "FELT")
			d.run("-I", "FORWARD", "-j", "FELT")
			c := []string{"-m", "comment", "--comment", "felt:inst0001:felt-red"}
			d.run(append(append([]string{"-A", "FELT", "-s", "10.1.0.0/16", "-d", "10.1.0.0/16"}, c...), "-j", "ACCEPT")...)
			d.run(append(append([]string{"-A", "FELT", "-i", "felt-red"}, c...), "-j", "DROP")...)
			d.run(append(append([]string{"-A", "FELT", "-d", "10.1.0.0/16"}, c...), "-j", "DROP")...)
			mustSync(t, newFirewall(t, ns, path, "inst0001"), redNet)
		}},
		{"upgrade-from-mangle-return", func(t *testing.T, ns *netns.NS, path string) {
			// What felt left when its mangle chain let each pool's own
			// traffic RETURN first (which forged sources passed).
			d := docker{l: &lab{host: ns}, t: t, path: path}
			d.run("-t", "mangle", "-N", "FELT-ISOLATION")
			d.run("-t", "mangle", "-I", "FORWARD", "-j", "FELT-ISOLATION")
			c := []string{"-m", "comment", "--comment", "felt:inst0001:felt-red"}
			d.run(append(append([]string{"-t", "mangle", "-A", "FELT-ISOLATION", "-s", "10.1.0.0/16", "-d", "10.1.0.0/16"}, c...), "-j", "RETURN")...)
			d.run(append(append([]string{"-t", "mangle", "-A", "FELT-ISOLATION", "-i", "felt-red"}, c...), "-j", "DROP")...)
			d.run(append(append([]string{"-t", "mangle", "-A", "FELT-ISOLATION", "-d", "10.1.0.0/16"}, c...), "-j", "DROP")...)
			mustSync(t, newFirewall(t, ns, path, "inst0001"), redNet)
		}},
		{"upgrade-from-per-network-rules", func(t *testing.T, ns *netns.NS, path string) {
			// What felt left before its sets (issue 14): rules for each
			// network in each chain (see perNetworkLayout).
			perNetworkLayout(t, &lab{host: ns}, path, "inst0001", redNet, blueNet)
			mustSync(t, newFirewall(t, ns, path, "inst0001"), redNet, blueNet)
		}},
		{"docker-20.10-then-felt", func(t *testing.T, ns *netns.NS, path string) {
			d := docker{l: &lab{host: ns}, t: t, path: path}
			d.start20()
			mustSync(t, newFirewall(t, ns, path, "inst0001"), redNet)
		}},
		{"dns-off", func(t *testing.T, ns *netns.NS, path string) {
			// FELT_DNS=off after felt served names: FELT-INPUT goes.
			fw := newFirewall(t, ns, path, "inst0001")
			mustSync(t, fw, redNet, blueNet)
			fw.SetDNS(netip.Addr{})
			mustSync(t, fw, redNet)
		}},
		{"docker-29-then-felt", func(t *testing.T, ns *netns.NS, path string) {
			d := docker{l: &lab{host: ns}, t: t, path: path}
			d.start29(true)
			mustSync(t, newFirewall(t, ns, path, "inst0001"), redNet)
		}},
	}
	for _, path := range flavours(t) {
		for _, c := range cases {
			t.Run(shortName(path)+"/"+c.name, func(t *testing.T) {
				ns := netns.New(t, "fw")
				c.setup(t, ns, path)
				golden(t, c.name, dump(t, ns, path))
			})
		}
	}
}

// perNetworkLayout writes the rules felt wrote before its ipsets (up to
// issue 14), for nets of instance, as that felt wrote them: per network,
// five drops in the isolation chain, two accepts and two drops in FELT,
// two accepts in FELT-INPUT.
func perNetworkLayout(t testing.TB, l *lab, path, instance string, nets ...firewall.Network) {
	t.Helper()
	script := `
-t mangle -N FELT-ISOLATION
-t mangle -I FORWARD -j FELT-ISOLATION
-N FELT
-A FORWARD -j FELT
-N FELT-INPUT
-I INPUT -j FELT-INPUT
`
	for _, n := range nets {
		c := "-m comment --comment felt:" + instance + ":" + n.Bridge
		r := strings.NewReplacer("{BR}", n.Bridge, "{POOL}", n.Pool.String(), "{C}", c)
		script += r.Replace(`
-t mangle -A FELT-ISOLATION -i {BR} ! -o {BR} ! -s {POOL} {C} -j DROP
-t mangle -A FELT-ISOLATION -i {BR} ! -o {BR} ! -d {POOL} {C} -j DROP
-t mangle -A FELT-ISOLATION ! -i {BR} ! -s {POOL} -d {POOL} {C} -j DROP
-t mangle -A FELT-ISOLATION -i docker_gwbridge -d {POOL} {C} -j DROP
-t mangle -A FELT-ISOLATION -i docker0 -d {POOL} {C} -j DROP
-I FELT -s {POOL} -d {POOL} {C} -j ACCEPT
-I FELT 2 -i {BR} -o {BR} {C} -j ACCEPT
-A FELT -i {BR} {C} -j DROP
-A FELT -d {POOL} {C} -j DROP
-A FELT-INPUT -d 169.254.53.53/32 -i {BR} -p udp -m udp --dport 53 {C} -j ACCEPT
-A FELT-INPUT -d 169.254.53.53/32 -i {BR} -p tcp -m tcp --dport 53 {C} -j ACCEPT
`)
	}
	l.iptAll(t, path, script)
}
