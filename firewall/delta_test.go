package firewall_test

import (
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

// sortedChains is felt's part of the ruleset with each chain's rules
// sorted: the same rules whatever order they were added in.
func sortedChains(t *testing.T, ns *netns.NS, path string) string {
	t.Helper()
	var b strings.Builder
	for _, c := range []struct{ table, chain string }{
		{"mangle", firewall.IsolationChain}, {"filter", firewall.Chain}, {"filter", firewall.InputChain},
	} {
		r := rulesOf(t, ns, path, c.table, c.chain)
		slices.Sort(r)
		b.WriteString(c.chain + ":\n" + strings.Join(r, "\n") + "\n")
	}
	b.WriteString(dumpSets(t, ns))
	return b.String()
}

// acceptsFirst fails unless every ACCEPT of FELT is above every DROP.
func acceptsFirst(t *testing.T, ns *netns.NS, path string) {
	t.Helper()
	dropped := false
	for _, r := range rulesOf(t, ns, path, "filter", firewall.Chain) {
		switch {
		case strings.HasSuffix(r, "-j DROP"):
			dropped = true
		case dropped:
			t.Errorf("an accept below a drop in FELT: %s", r)
		}
	}
}

// Networks added and removed one Sync at a time (the incremental path,
// which writes only their rules) leave the same rules as one Sync of the
// final list in a fresh namespace (the full path, which lists the chains),
// with FELT's accepts above its drops.
func TestIncrementalSyncMatchesFull(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		inc, full := netns.New(t, "fw"), netns.New(t, "fw")
		fw := newFirewall(t, inc, path, "inst0001")
		mustSync(t, fw, redNet)
		mustSync(t, fw, redNet, blueNet)
		mustSync(t, fw, redNet, blueNet, greenNet)
		mustSync(t, fw, redNet, greenNet)
		mustSync(t, newFirewall(t, full, path, "inst0001"), redNet, greenNet)
		if got, want := sortedChains(t, inc, path), sortedChains(t, full, path); got != want {
			t.Errorf("incremental:\n%s\nfull:\n%s", got, want)
		}
		acceptsFirst(t, inc, path)
		mustSync(t, fw)
		if out, err := inc.Run(path, "-w", "-S", firewall.Chain); err == nil {
			t.Errorf("FELT left after the last network went:\n%s", out)
		}
		if left := dumpSets(t, inc); left != "" {
			t.Errorf("sets left after the last network went:\n%s", left)
		}
	})
}

// A Sync whose incremental write fails (an entry of a removed network was
// already deleted by someone) falls back to the full one: no error, and
// exactly the rules and entries of the networks left.
func TestIncrementalSyncFallsBack(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		ns, full := netns.New(t, "fw"), netns.New(t, "fw")
		fw := newFirewall(t, ns, path, "inst0001")
		mustSync(t, fw, redNet, blueNet)
		blue := &netlink.IPSetEntry{IP: bluePool.Addr().AsSlice(), CIDR: uint8(bluePool.Bits()), IFace: blueNet.Bridge}
		if err := ns.Do(func() error { return netlink.IpsetDel("felt-inst0001-nets", blue) }); err != nil {
			t.Fatalf("delete blue's entry: %v", err)
		}
		mustSync(t, fw, redNet)
		mustSync(t, newFirewall(t, full, path, "inst0001"), redNet)
		if got, want := sortedChains(t, ns, path), sortedChains(t, full, path); got != want {
			t.Errorf("after the fallback:\n%s\nwant:\n%s", got, want)
		}
		if err := fw.Remove(); err != nil {
			t.Fatal(err)
		}
	})
}

// Two entries of nets may render the same rules: a pool written unmasked
// beside its masked form (all of their rules), two pools on one bridge (the
// bridge's own rules). The full Sync writes such a rule once, so the
// incremental Sync that drops one entry must not delete what the other
// still needs (before, it deleted red's isolation drops with redHost's).
func TestIncrementalSyncKeepsSharedRules(t *testing.T) {
	redHost := firewall.Network{Bridge: redNet.Bridge, Pool: netip.PrefixFrom(redPool.Addr().Next(), redPool.Bits())}
	redOther := firewall.Network{Bridge: redNet.Bridge, Pool: greenNet.Pool}
	eachFlavour(t, func(t *testing.T, path string) {
		for _, extra := range []firewall.Network{redHost, redOther} {
			ns, full := netns.New(t, "fw"), netns.New(t, "fw")
			fw := newFirewall(t, ns, path, "inst0001")
			mustSync(t, fw, redNet, extra)          // full: each rule once
			mustSync(t, fw, redNet, extra, blueNet) // incremental
			mustSync(t, fw, redNet, blueNet)        // incremental: extra goes
			mustSync(t, newFirewall(t, full, path, "inst0001"), redNet, blueNet)
			if got, want := sortedChains(t, ns, path), sortedChains(t, full, path); got != want {
				t.Errorf("after removing %v:\n%s\nwant:\n%s", extra, got, want)
			}
			if err := fw.Remove(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// filterFailing returns an iptables command (a link to path) whose
// iptables-restore refuses every filter-table input while the file the
// second result names exists, as a filter transaction that fails (the
// xtables lock held past -w, a line the kernel refuses) after the mangle
// one went through.
func filterFailing(t *testing.T, path string) (ipt, marker string) {
	t.Helper()
	dir := t.TempDir()
	ipt, marker = filepath.Join(dir, filepath.Base(path)), filepath.Join(dir, "fail-filter")
	if err := os.Symlink(path, ipt); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nin=$(cat)\n" +
		"if [ -e " + marker + " ] && printf '%s\\n' \"$in\" | grep -q '^\\*filter'; then echo 'filter refused (test)' >&2; exit 1; fi\n" +
		"printf '%s\\n' \"$in\" | exec " + path + "-restore \"$@\"\n"
	if err := os.WriteFile(ipt+"-restore", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return ipt, marker
}

// noAcceptsWithoutDrops fails when a network's accepts are in FELT while
// its isolation drops are not in FELT-ISOLATION: for the rules of the
// layout before the sets, which name each network's bridge in their
// comment, by bridge; for the sets' rules, all of the isolation chain's,
// and each entry of the nets set (which lets a network's traffic through)
// with the network's pools entry (which drops).
func noAcceptsWithoutDrops(t *testing.T, ns *netns.NS, path string, nets ...firewall.Network) {
	t.Helper()
	isoRules := rulesOf(t, ns, path, "mangle", firewall.IsolationChain)
	iso := strings.Join(isoRules, "\n") + "\n"
	for _, n := range append(nets, firewall.Network{Bridge: "/all"}) {
		tag := `"felt:inst0001:` + n.Bridge + `"`
		for _, r := range rulesOf(t, ns, path, "filter", firewall.Chain) {
			if strings.Contains(r, tag) && strings.HasSuffix(r, "-j ACCEPT") && !strings.Contains(iso, tag) {
				t.Errorf("%s: accept without isolation drops: %s", n.Bridge, r)
			}
		}
	}
	if n := strings.Count(iso, `"felt:inst0001:/all"`); n != 0 && n != 6 {
		t.Errorf("%d of the 6 isolation drops:\n%s", n, iso)
	}
	sets := dumpSets(t, ns)
	for _, n := range nets {
		if strings.Contains(sets, "\n"+n.Pool.String()+","+n.Bridge+"\n") &&
			!strings.Contains(sets, "\n"+n.Pool.String()+"\n") {
			t.Errorf("%s: in the nets set without its pools entry:\n%s", n.Bridge, sets)
		}
	}
}

// A network's isolation drops go only after its accepts did: a Sync whose
// filter transaction fails after the mangle one went through (an upgrade
// from the per-network rules, which deletes them; removing the last
// network) must not leave a network's accepts without its drops (a forged
// source in its pool passing from docker_gwbridge) until a resync
// succeeds.
func TestFailedFilterWriteKeepsDrops(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		ipt, marker := filterFailing(t, path)
		ns := netns.New(t, "fw")
		perNetworkLayout(t, &lab{host: ns}, path, "inst0001", redNet, blueNet)
		fw := newFirewall(t, ns, ipt, "inst0001")
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := fw.Sync([]firewall.Network{redNet, blueNet}); err == nil {
			t.Error("the upgrade succeeded with every filter write failing")
		}
		noAcceptsWithoutDrops(t, ns, path, redNet, blueNet)
		if err := os.Remove(marker); err != nil {
			t.Fatal(err)
		}
		mustSync(t, fw, redNet, blueNet)
		mustSync(t, fw, redNet) // incremental: no filter write
		noAcceptsWithoutDrops(t, ns, path, redNet, blueNet)
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := fw.Sync(nil); err == nil {
			t.Error("Sync of no networks succeeded with every filter write failing")
		}
		noAcceptsWithoutDrops(t, ns, path, redNet, blueNet)
		if !strings.Contains(dumpSets(t, ns), "10.1.0.0/16,felt-red") {
			t.Errorf("red's entries gone while its accepts stay:\n%s", dumpSets(t, ns))
		}
		if err := os.Remove(marker); err != nil {
			t.Fatal(err)
		}
		if err := fw.Remove(); err != nil {
			t.Fatal(err)
		}
		if left := feltRules(t, ns, path); len(left) > 0 {
			t.Errorf("rules left after Remove:\n%s", strings.Join(left, "\n"))
		}
		if left := dumpSets(t, ns); left != "" {
			t.Errorf("sets left after Remove:\n%s", left)
		}
	})
}

// A create (the incremental path) after someone deleted the jump to the
// isolation chain, or moved it below another rule, has it first again at
// once: the incremental write fails and the full one repairs it.
func TestIncrementalSyncRepairsIsolationJump(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		for _, damage := range [][]string{
			{"-t", "mangle", "-D", "FORWARD", "-j", firewall.IsolationChain},
			{"-t", "mangle", "-I", "FORWARD", "1", "-j", "ACCEPT"},
		} {
			ns := netns.New(t, "fw")
			fw := newFirewall(t, ns, path, "inst0001")
			mustSync(t, fw, redNet)
			if out, err := ns.Run(path, append([]string{"-w"}, damage...)...); err != nil {
				t.Fatalf("%v: %v\n%s", damage, err, out)
			}
			mustSync(t, fw, redNet, blueNet)
			out, err := ns.Run(path, "-w", "-t", "mangle", "-S", "FORWARD")
			if err != nil {
				t.Fatal(err)
			}
			var rules []string
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "-A ") {
					rules = append(rules, l)
				}
			}
			if len(rules) == 0 || rules[0] != "-A FORWARD -j "+firewall.IsolationChain {
				t.Errorf("after %v and a create, mangle FORWARD:\n%s", damage, out)
			}
			if n := strings.Count(out, "-j "+firewall.IsolationChain); n != 1 {
				t.Errorf("after %v and a create, %d jumps:\n%s", damage, n, out)
			}
		}
	})
}
