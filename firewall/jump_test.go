package firewall_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/testkit/netns"
)

// recordingIptables returns the path of an iptables command that runs the
// real one (and its -restore), and after every command that may change a
// table records in a log whether cond (a shell condition; by default: mangle
// FORWARD jumps to the isolation chain) holds at that moment, as "jump" or
// "none"; log returns the records, one per command.
func recordingIptables(t *testing.T, real string, cond ...string) (path string, log func() []string) {
	t.Helper()
	dir := t.TempDir()
	logFile := filepath.Join(dir, "log")
	c := fmt.Sprintf("%q -w -t mangle -C FORWARD -j %s 2>/dev/null", real, firewall.IsolationChain)
	if len(cond) > 0 {
		c = cond[0]
	}
	check := fmt.Sprintf(`if %s; then s=jump; else s=none; fi
echo "$s $*" >>%q
exit $rc
`, c, logFile)
	scripts := map[string]string{
		"iptables": fmt.Sprintf(`#!/bin/sh
%q "$@"; rc=$?
case " $* " in *" -S "*|*" -C "*|*" --version "*) exit $rc;; esac
`, real) + check,
		"iptables-restore": fmt.Sprintf(`#!/bin/sh
%q "$@"; rc=$?
`, real+"-restore") + check,
	}
	for name, script := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "iptables"), func() []string {
		b, err := os.ReadFile(logFile)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

// Putting the isolation jump back on top, when something was put above it
// (or a copy of it was added below), leaves no moment without it: during
// such a moment, with the filter chain's jump below Docker's ACCEPTs (see
// engines_test.go), nothing would drop traffic between networks.
func TestJumpMovedWithoutGap(t *testing.T) {
	for _, real := range flavours(t) {
		t.Run(shortName(real), func(t *testing.T) {
			ns := netns.New(t, "fw")
			path, log := recordingIptables(t, real)
			fw := newFirewall(t, ns, path, "inst0001")
			mustSync(t, fw, redNet)
			ipt := func(args ...string) {
				t.Helper()
				if out, err := ns.Run(real, append([]string{"-w", "-t", "mangle"}, args...)...); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
			}
			ipt("-I", "FORWARD", "-i", "lo", "-j", "ACCEPT")
			ipt("-A", "FORWARD", "-j", firewall.IsolationChain)
			mustSync(t, fw, redNet)
			want := []string{"-A FORWARD -j " + firewall.IsolationChain, "-A FORWARD -i lo -j ACCEPT"}
			if got := rulesOf(t, ns, real, "mangle", "FORWARD"); !slices.Equal(got, want) {
				t.Errorf("mangle FORWARD:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			records := log()
			first := slices.IndexFunc(records, func(r string) bool { return strings.HasPrefix(r, "jump ") })
			if first < 0 {
				t.Fatalf("the jump was never seen:\n%s", strings.Join(records, "\n"))
			}
			for _, r := range records[first:] {
				if strings.HasPrefix(r, "none ") {
					t.Errorf("no jump to %s after: %s", firewall.IsolationChain, strings.TrimPrefix(r, "none "))
				}
			}
		})
	}
}

// Upgrading from an earlier layout (see the golden files upgrade-from-*:
// the mangle chain with a RETURN per pool, the per-network rules before the
// sets) replaces its rules without a moment in which the mangle chain has
// no drop for forged traffic into red's pool.
func TestUpgradeWithoutGap(t *testing.T) {
	c := []string{"-m", "comment", "--comment", "felt:inst0001:felt-red"}
	layouts := map[string]func(t *testing.T, ns *netns.NS, real string){
		"mangle-return": func(t *testing.T, ns *netns.NS, real string) {
			ipt := func(args ...string) {
				t.Helper()
				if out, err := ns.Run(real, append([]string{"-w", "-t", "mangle"}, args...)...); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
			}
			ipt("-N", firewall.IsolationChain)
			ipt("-I", "FORWARD", "-j", firewall.IsolationChain)
			ipt(append(append([]string{"-A", firewall.IsolationChain, "-s", "10.1.0.0/16", "-d", "10.1.0.0/16"}, c...), "-j", "RETURN")...)
			ipt(append(append([]string{"-A", firewall.IsolationChain, "-i", "felt-red"}, c...), "-j", "DROP")...)
			ipt(append(append([]string{"-A", firewall.IsolationChain, "-d", "10.1.0.0/16"}, c...), "-j", "DROP")...)
		},
		"per-network-rules": func(t *testing.T, ns *netns.NS, real string) {
			perNetworkLayout(t, &lab{host: ns}, real, "inst0001", redNet)
		},
	}
	for _, real := range flavours(t) {
		for name, layout := range layouts {
			t.Run(shortName(real)+"/"+name, func(t *testing.T) {
				ns := netns.New(t, "fw")
				layout(t, ns, real)
				has := func(args ...string) string {
					return fmt.Sprintf("%q -w -t mangle -C %s %s 2>/dev/null", real, firewall.IsolationChain, strings.Join(args, " "))
				}
				old := func(args ...string) string { return has(append(append(args, c...), "-j", "DROP")...) }
				// The old drops of forged traffic into the pool, or the
				// new one (with red's entries in the sets: the sets are
				// filled before the rules are written).
				cond := old("-d", "10.1.0.0/16") + " || " +
					old("!", "-i", "felt-red", "!", "-s", "10.1.0.0/16", "-d", "10.1.0.0/16") + " || " +
					has("-m", "set", "--match-set", "felt-inst0001-pools", "dst",
						"-m", "set", "!", "--match-set", "felt-inst0001-nets", "dst,src",
						"-m", "set", "!", "--match-set", "felt-inst0001-nets", "src,dst",
						"-m", "comment", "--comment", "felt:inst0001:/all", "-j", "DROP")
				path, log := recordingIptables(t, real, cond)
				mustSync(t, newFirewall(t, ns, path, "inst0001"), redNet)
				for _, r := range log() {
					if strings.HasPrefix(r, "none ") {
						t.Errorf("no drop into red's pool after: %s", strings.TrimPrefix(r, "none "))
					}
				}
				if got := rulesOf(t, ns, real, "mangle", firewall.IsolationChain); len(got) != 6 || strings.Contains(strings.Join(got, "\n"), "felt-red") {
					t.Errorf("isolation chain after the upgrade:\n%s", strings.Join(got, "\n"))
				}
			})
		}
	}
}

// A create (the incremental path) writes no rule, whatever the networks
// already there (issue 14: CreateNetwork time stays flat): only the set
// entries and the one iptables-restore that puts the isolation jump back on
// top. And the rules are the same whatever the number of networks.
func TestCreateWritesNoRule(t *testing.T) {
	for _, real := range flavours(t) {
		t.Run(shortName(real), func(t *testing.T) {
			ns := netns.New(t, "fw")
			path, log := recordingIptables(t, real)
			fw := newFirewall(t, ns, path, "inst0001")
			nets := fakeNetworks(101)
			mustSync(t, fw, nets[0])
			one := feltRules(t, ns, real)
			mustSync(t, fw, nets[:100]...)
			if hundred := feltRules(t, ns, real); !slices.Equal(hundred, one) {
				t.Errorf("rules for 100 networks differ from those for one:\n%s\nwant:\n%s", strings.Join(hundred, "\n"), strings.Join(one, "\n"))
			}
			before := len(log())
			mustSync(t, fw, nets...)
			if writes := log()[before:]; len(writes) != 1 {
				t.Errorf("a create with 100 networks there ran %d iptables commands, want 1 (the jump):\n%s", len(writes), strings.Join(writes, "\n"))
			}
			if sets := dumpSets(t, ns); !strings.Contains(sets, nets[100].Pool.String()+","+nets[100].Bridge) {
				t.Errorf("the created network is not in the sets:\n%s", sets)
			}
			if err := fw.Remove(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
