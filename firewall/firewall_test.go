package firewall_test

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
)

// rulesOf lists the rules (-A lines) of chain in table.
func rulesOf(t *testing.T, ns *netns.NS, path, table, chain string) []string {
	t.Helper()
	out, err := ns.Run(path, "-w", "-t", table, "-S")
	if err != nil {
		t.Fatalf("%s -t %s -S: %v\n%s", path, table, err, out)
	}
	var rules []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A "+chain+" ") {
			rules = append(rules, l)
		}
	}
	return rules
}

func feltRules(t *testing.T, ns *netns.NS, path string) []string {
	return append(rulesOf(t, ns, path, "filter", "FELT"), rulesOf(t, ns, path, "mangle", "FELT-ISOLATION")...)
}

// Defect 5 of issue 15: a rule whose comment iptables lists escaped (a
// backslash, left by an earlier felt that took a bridge name from a hostile
// NetworkID) must still be found and deleted.
func TestStaleRuleWithEscapedCommentRemoved(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		ns := netns.New(t, "fw")
		fw := newFirewall(t, ns, path, "inst0001")
		mustSync(t, fw, redNet)
		for _, args := range [][]string{
			{"-i", `felt-a\b`, "-m", "comment", "--comment", `felt:inst0001:felt-a\b`, "-j", "DROP"},
			{"-d", "10.9.0.0/16", "-m", "comment", "--comment", `felt:inst0001:felt-"q" b`, "-j", "DROP"},
		} {
			if out, err := ns.Run(path, append([]string{"-w", "-A", "FELT"}, args...)...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		mustSync(t, fw, redNet)
		for _, r := range rulesOf(t, ns, path, "filter", "FELT") {
			if strings.Contains(r, `felt-a`) || strings.Contains(r, "10.9.0.0") {
				t.Errorf("stale rule left behind: %s", r)
			}
		}
		if err := fw.Remove(); err != nil {
			t.Fatal(err)
		}
		if left := feltRules(t, ns, path); len(left) > 0 {
			t.Errorf("rules left after Remove:\n%s", strings.Join(left, "\n"))
		}
	})
}

// Whatever goes into a rule must come out of the listing as it went in, or
// not go in: a bridge name outside [A-Za-z0-9._-] is refused with an error
// naming it, before any rule is written.
func TestUnsafeNamesRefused(t *testing.T) {
	path := flavours(t)[0]
	ns := netns.New(t, "fw")
	fw := newFirewall(t, ns, path, "inst0001")
	for _, bad := range []string{`felt-a\b`, `felt-a"b`, "felt a", "", "felt-0123456789a"} {
		err := fw.Sync([]firewall.Network{redNet, {Bridge: bad, Pool: netip.MustParsePrefix("10.9.0.0/16")}})
		if err == nil || !strings.Contains(err.Error(), "bridge") {
			t.Errorf("bridge %q: got %v, want an error naming the bridge", bad, err)
		}
		if left := feltRules(t, ns, path); len(left) > 0 {
			t.Fatalf("bridge %q: rules written although refused:\n%s", bad, strings.Join(left, "\n"))
		}
	}
	err := fw.Sync([]firewall.Network{{Bridge: "felt-x", Pool: netip.Prefix{}}})
	if err == nil || !strings.Contains(err.Error(), "pool") {
		t.Errorf("invalid pool: got %v, want an error naming the pool", err)
	}
}

// Keep repairs what others flush, delete or reorder, and says so.
func TestKeepRepairs(t *testing.T) {
	path := flavours(t)[0]
	ns := netns.New(t, "fw")
	var logs testkit.LogBuffer
	fw, err := firewall.New(ns.Handle, "inst0001", path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Keep is stopped, and waited for, before the namespace goes (cleanups
	// run last first): a Keep still running after its namespace's handle
	// was closed would repair in the test's own namespace (a closed handle
	// is the current namespace), as it did on a failed run, which left this
	// instance's rules and sets on the host.
	ctx, cancel := context.WithCancel(context.Background())
	kept := make(chan struct{})
	go func() { defer close(kept); fw.Keep(ctx, 100*time.Millisecond) }()
	t.Cleanup(func() { cancel(); <-kept })
	mustSync(t, fw, redNet, blueNet)
	want := dump(t, ns, path)
	ipt := func(args ...string) {
		t.Helper()
		if out, err := ns.Run(path, append([]string{"-w"}, args...)...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not repaired; rules now:\n%s", what, dump(t, ns, path))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	same := func() bool { return dump(t, ns, path) == want }

	ipt("-t", "mangle", "-F", "FORWARD")
	waitFor("mangle FORWARD flushed", same)
	ipt("-t", "mangle", "-F", firewall.IsolationChain)
	waitFor("isolation chain flushed", same)
	ipt("-F", firewall.Chain)
	ipt("-D", "FORWARD", "-j", firewall.Chain)
	waitFor("accept chain flushed and unhooked", same)
	// An entry deleted from a set (the network's traffic dropped), and an
	// entry of no network's added (a stale one let through what it names).
	setOp := func(op func(string, *netlink.IPSetEntry) error, pool netip.Prefix) {
		t.Helper()
		e := &netlink.IPSetEntry{IP: pool.Addr().AsSlice(), CIDR: uint8(pool.Bits()), IFace: redNet.Bridge}
		if err := ns.Do(func() error { return op("felt-inst0001-nets", e) }); err != nil {
			t.Fatal(err)
		}
	}
	setOp(netlink.IpsetDel, redPool)
	waitFor("set entry deleted", same)
	setOp(netlink.IpsetAdd, netip.MustParsePrefix("10.9.0.0/16"))
	waitFor("stale set entry added", same)
	// Something put above the isolation jump (an ACCEPT would skip it).
	ipt("-t", "mangle", "-I", "FORWARD", "-i", "lo", "-j", "ACCEPT")
	waitFor("isolation jump pushed down", func() bool {
		r := rulesOf(t, ns, path, "mangle", "FORWARD")
		return len(r) == 2 && r[0] == "-A FORWARD -j "+firewall.IsolationChain
	})
	if !strings.Contains(logs.String(), "firewall repaired") {
		t.Errorf("repairs not logged:\n%s", logs.String())
	}
	// After Remove, Keep puts nothing back.
	if err := fw.Remove(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if left := feltRules(t, ns, path); len(left) > 0 {
		t.Errorf("rules back after Remove:\n%s", strings.Join(left, "\n"))
	}
	if left := dumpSets(t, ns); left != "" {
		t.Errorf("sets left after Remove:\n%s", left)
	}
}

// A Sync of what is already there changes nothing (no rule deleted and
// added again: no moment without it).
func TestSyncIdempotent(t *testing.T) {
	path := flavours(t)[0]
	ns := netns.New(t, "fw")
	var logs testkit.LogBuffer
	fw, err := firewall.New(ns.Handle, "inst0001", path, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	mustSync(t, fw, redNet, blueNet)
	if !strings.Contains(logs.String(), "firewall synced") {
		t.Fatalf("the first Sync logged no change:\n%s", logs.String())
	}
	before := logs.String()
	mustSync(t, fw, blueNet, redNet)
	if after := logs.String(); after != before {
		t.Errorf("a repeated Sync changed rules:\n%s", strings.TrimPrefix(after, before))
	}
}
