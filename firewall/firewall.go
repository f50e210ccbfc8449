// Package firewall keeps felt's iptables rules, which let each felt pool talk
// to itself (same host and across hosts, whatever the FORWARD policy Docker
// sets) and nothing else reach a felt pool or leave a felt bridge. Traffic to
// the outside world leaves through Docker's docker_gwbridge, not the felt
// bridge, so the felt bridge never needs to forward anywhere else.
//
// Two chains, because isolation and permission need different places:
//
//   - FELT-ISOLATION, in the mangle table, jumped to first from mangle
//     FORWARD, drops (only drops, each matching nothing of the pools' own
//     traffic, and told by interfaces too, so that a forged source address
//     does not pass: see isolation in rules.go). The mangle FORWARD hook runs before the filter one,
//     and no Docker version (20.10 to 29, read in moby's source) writes to
//     mangle FORWARD, while every one reorders filter FORWARD: 20.10 and 26
//     insert each new bridge's ACCEPT rules at its top (docker_gwbridge's
//     `-i docker_gwbridge ! -o docker_gwbridge -j ACCEPT` above felt's rules
//     when it is created after felt networks), 29 puts DOCKER-USER and
//     DOCKER-FORWARD back on top at every start, and both move DOCKER-USER
//     by deleting and re-inserting its jump (a moment without it). A drop
//     is final whatever accepts come later, in any table or nftables chain,
//     so the isolation holds whatever order Docker puts its filter rules in
//     and whenever it does so, with Docker's iptables or nftables backend,
//     and needs nothing from DOCKER-USER (which users own and often flush).
//
//   - FELT, in the filter table, jumped to from FORWARD, accepts each pool's
//     traffic to itself, which Docker's FORWARD policy DROP would otherwise
//     drop, then repeats the drops (the one layer felt had before the mangle
//     chain; a second one now, for a moment when mangle was flushed). Where
//     its jump sits does not matter to the accepts (no Docker rule drops
//     traffic of a bridge that is not Docker's); it is added after the jump
//     to DOCKER-USER, so users' rules there apply to felt as to Docker's own
//     networks, and left where it is.
//
//   - FELT-INPUT, in the filter table, jumped to first from INPUT, only
//     while felt serves container names (SetDNS): accepts DNS (UDP and TCP
//     port 53) from each felt bridge to felt's DNS address, which a host
//     whose INPUT policy drops (ufw) would otherwise drop. Docker writes
//     nothing to INPUT for containers: its resolver lives in their netns.
//
// Each chain holds the same few rules of each felt instance whatever its
// networks: which pool belongs to which bridge is in ipsets (see sets in
// rules.go), so that the work per packet does not grow with the networks
// (issue 14), and a network's creation or deletion writes set entries, not
// rules (delta).
//
// Sync sets them up, and Keep repeats it periodically, so that a flush or a
// reorder by anyone, or a set changed, is repaired within a resync interval.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
)

// The chains and where they are jumped to from.
const (
	Chain          = "FELT"           // filter table, from FORWARD: accepts
	IsolationChain = "FELT-ISOLATION" // mangle table, first in FORWARD: drops
	InputChain     = "FELT-INPUT"     // filter table, first in INPUT: felt's DNS
)

const (
	filter     = "filter"
	mangle     = "mangle"
	forward    = "FORWARD"
	input      = "INPUT"
	dockerUser = "DOCKER-USER"
)

// Firewall programs this felt instance's rules. Rules are tagged with the
// instance (its host ID) in their comments, so two felt instances sharing a
// namespace (two plugins on one engine, say) leave each other's rules alone;
// the chains and jumps are shared, and go with the last instance's rules.
type Firewall struct {
	instance string
	ipt      *iptables.IPTables
	restore  string // iptables-restore of the same flavour, "" without one
	ns       netns.NsHandle
	log      *slog.Logger

	mu     sync.Mutex
	dns    netip.Addr // felt's DNS address (SetDNS); invalid: no FELT-INPUT
	want   []Network  // the last Sync's networks, which Keep re-applies
	synced bool       // Sync ran (and Remove did not since)
	// What the last successful apply or delta put in place (nil: unknown,
	// the next Sync lists the chains), so that a Sync that adds or removes
	// networks writes only their rules: see delta.
	applied    map[Network]bool
	appliedDNS netip.Addr
}

// New returns a Firewall working in ns (a closed handle: the current
// namespace) with the iptables command at path, or, when path is empty, the
// flavour detect picks.
func New(ns netns.NsHandle, instance, path string, log *slog.Logger) (*Firewall, error) {
	if log == nil {
		log = slog.Default()
	}
	if len(instance) > 64 || !safeName.MatchString(instance) {
		return nil, fmt.Errorf("firewall: instance %q: must be 1 to 64 characters of A-Z a-z 0-9 . _ -", instance)
	}
	f := &Firewall{ns: ns, log: log, instance: instance}
	err := nsutil.Do(ns, func() error {
		if path == "" {
			path = detect()
		}
		ipt, err := iptables.New(iptables.Path(path), iptables.Timeout(5))
		if err != nil {
			return fmt.Errorf("iptables (%s): %w", path, err)
		}
		f.ipt = ipt
		// The flavour's iptables-restore changes a table in one
		// transaction (see jumpFirst): iptables-nft-restore for
		// iptables-nft, as detect finds iptables-nft-save.
		if p, err := exec.LookPath(path + "-restore"); err == nil {
			f.restore = p
		} else {
			log.Warn("no iptables-restore beside iptables: moving felt's isolation jump back to the top leaves a moment without it", "iptables", path, "err", err)
		}
		log.Debug("using iptables", "path", path, "restore", f.restore)
		return nil
	})
	return f, err
}

// SetDNS sets felt's DNS address (FELT_DNS), which felt bridges may reach
// on port 53 (FELT-INPUT); an invalid one removes the chain. It takes
// effect at the next Sync or Keep.
func (f *Firewall) SetDNS(addr netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dns = addr
}

func (f *Firewall) tag() string { return "felt:" + f.instance + ":" }

// Sync makes felt's chains hold exactly the rules of nets (and no rule of a
// network that no longer exists) and the jumps to them sit where they must.
// Every network is checked before anything is written. When nets only adds
// networks to or removes them from the last Sync's, it writes just their
// rules (delta), so that its cost does not grow with the networks already
// there; the listing and repair of everything is then left to Keep's next
// resync (or to any Sync that adds or removes nothing).
func (f *Firewall) Sync(nets []Network) error {
	for _, n := range nets {
		if err := n.check(); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.want, f.synced = slices.Clone(nets), true
	changes, ok := f.delta(nets)
	if ok {
		f.log.Debug("firewall synced", "changes", changes)
		return nil
	}
	changes, err := f.apply(nets)
	if len(changes) > 0 {
		f.log.Debug("firewall synced", "changes", changes)
	}
	return err
}

// delta writes only the set entries of the networks nets adds to or
// removes from the last apply's: the rules are the same few for any number
// of networks (see sets in rules.go), so a create or delete writes no rule
// and lists no chain (with hundreds of networks, listing and checking every
// rule at each CreateNetwork made each one cost in proportion to the
// networks already there). It reports false, having changed nothing, when
// it cannot tell what to write (no successful apply since New or Remove,
// felt's DNS changed, no network added or removed: a repeated Sync is a
// request to check everything), when nets is empty (the chains and sets
// go), when the isolation jump is missing (see below) or, having changed
// part, when a set write fails (an entry of the last apply was deleted by
// someone): then Sync does the full apply, which lists and repairs. What
// someone else changed meanwhile is not looked at here; Keep's full apply
// repairs it within a resync interval, as it always did between two Syncs.
func (f *Firewall) delta(nets []Network) (changes []string, ok bool) {
	if f.applied == nil || f.restore == "" || len(nets) == 0 || f.dns != f.appliedDNS {
		return nil, false
	}
	want := make(map[Network]bool, len(nets))
	var added, removed bool
	for _, n := range nets {
		added = added || !f.applied[n]
		want[n] = true
	}
	var before []Network
	for n := range f.applied {
		removed = removed || !want[n]
		before = append(before, n)
	}
	if !added && !removed {
		return nil, false
	}
	// Entries are compared, not networks: two networks may render the same
	// entry (a pool written unmasked beside its masked form), which goes
	// only when no network left renders it. Comparing them all is memory
	// work only.
	after, prev := f.entries(nets), f.entries(before)
	adds, dels := minusEntries(after, prev), minusEntries(prev, after)
	err := nsutil.Do(f.ns, func() error {
		if added {
			// The jump to the drops deleted and put back on top, in one
			// transaction (so never missing for a packet): a create puts
			// a jump someone moved back on top, and one whose jump someone
			// deleted fails here, before any entry is written, and takes
			// the full path, which repairs it, as every create did before
			// this path existed. Only the mangle jump: without it nothing
			// isolates, while a missing jump to FELT only drops (Docker's
			// FORWARD policy) until the resync.
			jump := rule{"-j", IsolationChain}
			if err := f.restoreOps(mangle, []op{{"-D", forward, jump}, {"-I", forward, jump}}, &changes); err != nil {
				return err
			}
		}
		// An added network's pools entry (which drops) before its nets
		// entry (which lets its traffic through), a removed one's in the
		// reverse order: entries lists them so.
		for _, e := range adds {
			if _, err := addEntry(e); err != nil {
				return err
			}
			changes = append(changes, "added ipset entry "+e.String())
		}
		for i := len(dels) - 1; i >= 0; i-- {
			if err := delEntry(dels[i]); err != nil {
				return err
			}
			changes = append(changes, "deleted ipset entry "+dels[i].String())
		}
		return nil
	})
	if err != nil {
		f.applied = nil
		f.log.Debug("firewall: incremental sync failed, listing the chains", "err", err)
		return nil, false
	}
	f.applied = want
	return changes, true
}

// minusEntries returns the entries of a that are not in b, in a's order.
func minusEntries(a, b []entry) []entry {
	skip := make(map[entry]bool, len(b))
	for _, e := range b {
		skip[e] = true
	}
	var out []entry
	for _, e := range a {
		if !skip[e] {
			out = append(out, e)
		}
	}
	return out
}

// op is one line of an iptables-restore input: -A, -I (at the top) or -D
// of a rule in chain.
type op struct {
	verb, chain string
	rule        rule
}

func (o op) String() string {
	return fmt.Sprintf("%s %s %s", o.verb, o.chain, strings.Join(o.rule, " "))
}

// restoreOps applies ops to table in one iptables-restore --noflush
// transaction (all or nothing: a -D of a rule that is not there fails it),
// or, without iptables-restore, one command each.
func (f *Firewall) restoreOps(table string, ops []op, changes *[]string) error {
	if len(ops) == 0 {
		return nil
	}
	if f.restore == "" {
		for _, o := range ops {
			var err error
			switch o.verb {
			case "-A":
				err = f.ipt.Append(table, o.chain, o.rule...)
			case "-I":
				err = f.ipt.Insert(table, o.chain, 1, o.rule...)
			default:
				err = f.ipt.Delete(table, o.chain, o.rule...)
			}
			if err != nil {
				return fmt.Errorf("iptables -t %s %s: %w", table, o, err)
			}
			*changes = append(*changes, opChange(table, o))
		}
		return nil
	}
	var in strings.Builder
	fmt.Fprintf(&in, "*%s\n", table)
	for _, o := range ops {
		if o.verb == "-I" {
			fmt.Fprintf(&in, "-I %s 1 %s\n", o.chain, restoreWords(o.rule))
		} else {
			fmt.Fprintf(&in, "%s %s %s\n", o.verb, o.chain, restoreWords(o.rule))
		}
	}
	in.WriteString("COMMIT\n")
	cmd := exec.Command(f.restore, "-w", "5", "--noflush")
	cmd.Stdin = strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s -t %s (%d rules): %w: %s", f.restore, table, len(ops), err, strings.TrimSpace(string(out)))
	}
	for _, o := range ops {
		*changes = append(*changes, opChange(table, o))
	}
	return nil
}

// plainWord is a word iptables-restore reads as it is.
var plainWord = regexp.MustCompile(`^[A-Za-z0-9._:/!,+=-]+$`)

// restoreWords joins words for an iptables-restore line, quoting those that
// need it: felt writes only plain words, but a rule it deletes as listed
// may be an earlier felt's with a comment holding a backslash, a quote or
// a space. Inside double quotes, iptables-restore takes a character after
// a backslash as it is.
func restoreWords(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		if plainWord.MatchString(w) {
			out[i] = w
			continue
		}
		out[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(w) + `"`
	}
	return strings.Join(out, " ")
}

// opChange is how a change is logged (as before the batching).
func opChange(table string, o op) string {
	if o.verb == "-D" {
		return fmt.Sprintf("deleted -A %s %s", o.chain, strings.Join(o.rule, " "))
	}
	return fmt.Sprintf("added -t %s -A %s %s", table, o.chain, strings.Join(o.rule, " "))
}

// Keep re-applies the last Sync every interval until ctx ends: rules or
// jumps that someone flushed, deleted or moved (a firewall reload, a script's
// `iptables -F`, an engine's reordering) come back, and are logged.
func (f *Firewall) Keep(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		f.mu.Lock()
		if f.synced {
			changes, err := f.apply(f.want)
			if len(changes) > 0 {
				f.log.Info("firewall repaired", "changes", changes)
			}
			if err != nil {
				f.log.Warn("firewall resync failed", "err", err)
			}
		}
		f.mu.Unlock()
	}
}

// rules renders this instance's rules: the isolation chain's drops (in
// any order), the filter chain's accepts (its heads) and drops (its tails),
// FELT-INPUT's accepts. They are the same whatever the networks; entries
// renders what differs.
func (f *Firewall) rules() (isolation, accepts, drops, inputs []rule) {
	return f.isolation(), f.accepts(), f.filterDrops(), f.dnsAccepts()
}

// apply does Sync's work in the namespace; it returns what it changed.
func (f *Firewall) apply(nets []Network) (changes []string, err error) {
	f.applied = nil
	defer func() {
		if err == nil && len(nets) > 0 {
			f.applied, f.appliedDNS = make(map[Network]bool, len(nets)), f.dns
			for _, n := range nets {
				f.applied[n] = true
			}
		}
	}()
	isolation, accepts, drops, inputs := f.rules()
	// The filter chain has drops after its accepts: a second layer for
	// when the mangle chain was flushed and Keep has not yet put it back,
	// effective wherever FELT's jump sits above Docker's accepts (the
	// accepts come first there, so it does not stop forged sources).
	err = nsutil.Do(f.ns, func() error {
		if len(nets) == 0 {
			// Nothing of felt's stays in the kernel without networks.
			return f.removeAll(&changes)
		}
		// The sets before the rules that refer to them (iptables refuses
		// a rule naming a missing set); fillSets writes them in a safe
		// order of their own.
		if err := f.fillSets(f.entries(nets), &changes); err != nil {
			return err
		}
		// Isolation first, then permission, then the jumps: a chain is
		// complete before traffic is sent to it. Rules of an earlier
		// layout (per network, see the upgrade-from-* golden files) are
		// this instance's unwanted rules: its drops go last, once its
		// accepts are gone, so that a filter write that fails (the xtables
		// lock held too long) does not leave accepts without drops until
		// a resync succeeds.
		if err := f.ensureChain(mangle, IsolationChain); err != nil {
			return err
		}
		isoAdds, isoUnwanted, err := f.chainOps(mangle, IsolationChain, nil, isolation) // in any order
		if err != nil {
			return err
		}
		if err := f.restoreOps(mangle, isoAdds, &changes); err != nil {
			return err
		}
		if err := f.ensureChain(filter, Chain); err != nil {
			return err
		}
		if err := f.syncChain(filter, Chain, accepts, drops, &changes); err != nil {
			return err
		}
		if err := f.restoreOps(mangle, isoUnwanted, &changes); err != nil {
			return err
		}
		if err := f.jumpFirst(mangle, forward, IsolationChain, &changes); err != nil {
			return err
		}
		if err := f.jumpPresent(filter, forward, Chain, &changes); err != nil {
			return err
		}
		if !f.dns.IsValid() {
			return f.removeChain(filter, InputChain, input, &changes)
		}
		if err := f.ensureChain(filter, InputChain); err != nil {
			return err
		}
		if err := f.syncChain(filter, InputChain, nil, inputs, &changes); err != nil {
			return err
		}
		return f.jumpFirst(filter, input, InputChain, &changes)
	})
	return changes, err
}

func (f *Firewall) ensureChain(table, chain string) error {
	ok, err := f.ipt.ChainExists(table, chain)
	if err != nil {
		return fmt.Errorf("iptables -t %s: %w", table, err)
	}
	if !ok {
		if err := f.ipt.NewChain(table, chain); err != nil {
			return fmt.Errorf("iptables -t %s: new chain %s: %w", table, chain, err)
		}
	}
	return nil
}

// syncChain makes this instance's rules in chain be heads (in this order,
// at the top) and tails (at the bottom): rules of this instance that are not
// wanted, repeated, or a head found below a tail are deleted; missing ones
// are added. Rules of others are left alone. Pools never overlap, so one
// network's tails cannot shadow another network's head.
func (f *Firewall) syncChain(table, chain string, heads, tails []rule, changes *[]string) error {
	adds, unwanted, err := f.chainOps(table, chain, heads, tails)
	if err != nil {
		return err
	}
	// The writes go in the order the separate commands went before they
	// were one transaction (restoreOps), which keeps each -D deleting the
	// copy it did (deleting a rule by its specification deletes its first
	// copy). Rules in any order (the isolation chain's drops): the new ones
	// before the old ones go, so that even without iptables-restore a
	// change of layout (an upgrade) leaves no moment with neither. Heads
	// and tails: a head found below a tail is deleted before it is
	// inserted on top again.
	ops := append(unwanted, adds...)
	if len(heads) == 0 {
		ops = append(adds, unwanted...)
	}
	return f.restoreOps(table, ops, changes)
}

// chainOps lists chain and returns what syncChain writes: the rules to
// add and this instance's listed rules to delete.
func (f *Firewall) chainOps(table, chain string, heads, tails []rule) (adds, unwanted []op, err error) {
	isHead, want := map[string]bool{}, map[string]bool{}
	for _, r := range heads {
		isHead[r.key()], want[r.key()] = true, true
	}
	for _, r := range tails {
		want[r.key()] = true
	}
	lines, err := f.ipt.List(table, chain)
	if err != nil {
		return nil, nil, fmt.Errorf("iptables -t %s: list %s: %w", table, chain, err)
	}
	seen, tailSeen := map[string]bool{}, false
	// unwanted: listed rules to delete, as listed
	for _, line := range lines {
		args, ok, err := ruleArgs(line, chain)
		if err != nil && strings.Contains(line, f.tag()) {
			f.log.Warn("cannot read a rule of this felt", "rule", line, "err", err)
		}
		if !ok || !strings.HasPrefix(commentOf(args), f.tag()) {
			continue
		}
		k := rule(args).key()
		if want[k] && !seen[k] && !(isHead[k] && tailSeen) {
			seen[k] = true
			tailSeen = tailSeen || !isHead[k]
			continue
		}
		unwanted = append(unwanted, op{"-D", chain, args})
	}
	for i := len(heads) - 1; i >= 0; i-- {
		if !seen[heads[i].key()] {
			seen[heads[i].key()] = true // nets may repeat a network
			adds = append(adds, op{"-I", chain, heads[i]})
		}
	}
	for _, r := range tails {
		if !seen[r.key()] {
			seen[r.key()] = true
			adds = append(adds, op{"-A", chain, r})
		}
	}
	return adds, unwanted, nil
}

// jumpFirst makes `-j to` the first rule of from, and the only jump to it.
func (f *Firewall) jumpFirst(table, from, to string, changes *[]string) error {
	lines, err := f.ipt.List(table, from)
	if err != nil {
		return fmt.Errorf("iptables -t %s: list %s: %w", table, from, err)
	}
	jump := "-A " + from + " -j " + to
	var rules []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, l)
		}
	}
	if len(rules) > 0 && rules[0] == jump && !slices.Contains(rules[1:], jump) {
		return nil
	}
	// iptables has no move: delete every jump and insert one on top, in
	// one iptables-restore transaction, so that no packet passes in a
	// moment without the jump (a few milliseconds between two iptables
	// commands, enough for a leak when Docker's ACCEPTs are above FELT).
	n := 0
	for _, r := range rules {
		if r == jump {
			n++
		}
	}
	if err := f.moveFirst(table, from, to, n); err != nil {
		return fmt.Errorf("iptables -t %s: put jump to %s first in %s: %w", table, to, from, err)
	}
	*changes = append(*changes, fmt.Sprintf("put -t %s %s first in %s", table, jump, from))
	return nil
}

// moveFirst deletes n jumps from `from` to `to` and inserts one at the top,
// atomically with iptables-restore (both flavours apply a --noflush input as
// one transaction, or not at all when a line fails: a jump deleted by
// someone else meanwhile fails it, and the next resync tries again).
func (f *Firewall) moveFirst(table, from, to string, n int) error {
	if f.restore == "" {
		for range n {
			if err := f.ipt.Delete(table, from, "-j", to); err != nil {
				return err
			}
		}
		return f.ipt.Insert(table, from, 1, "-j", to)
	}
	var in strings.Builder
	fmt.Fprintf(&in, "*%s\n", table)
	for range n {
		fmt.Fprintf(&in, "-D %s -j %s\n", from, to)
	}
	fmt.Fprintf(&in, "-I %s 1 -j %s\nCOMMIT\n", from, to)
	cmd := exec.Command(f.restore, "-w", "5", "--noflush")
	cmd.Stdin = strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", f.restore, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// jumpPresent makes sure from jumps to `to`, adding the jump right after
// the jump to DOCKER-USER (or first, without one) when it is missing. An
// existing jump is left where it is: its position does not matter.
func (f *Firewall) jumpPresent(table, from, to string, changes *[]string) error {
	ok, err := f.ipt.Exists(table, from, "-j", to)
	if err != nil {
		return fmt.Errorf("iptables -t %s: %w", table, err)
	}
	if ok {
		return nil
	}
	lines, err := f.ipt.List(table, from)
	if err != nil {
		return fmt.Errorf("iptables -t %s: list %s: %w", table, from, err)
	}
	pos, n := 1, 0
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			n++
			if l == "-A "+from+" -j "+dockerUser {
				pos = n + 1
				break
			}
		}
	}
	if err := f.ipt.Insert(table, from, pos, "-j", to); err != nil {
		return fmt.Errorf("iptables -t %s: jump to %s: %w", table, to, err)
	}
	*changes = append(*changes, fmt.Sprintf("added -t %s -A %s -j %s at %d", table, from, to, pos))
	return nil
}

// Remove deletes this instance's rules and, for each chain in which no
// other instance has rules left, the chain and the jump to it (the plugin
// stops). Keep does nothing until the next Sync.
func (f *Firewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.want, f.synced, f.applied = nil, false, nil
	var changes []string
	err := nsutil.Do(f.ns, func() error { return f.removeAll(&changes) })
	if len(changes) > 0 {
		f.log.Debug("firewall removed", "changes", changes)
	}
	return err
}

// removeAll deletes this instance's rules, the accepts before the drops:
// when the accepts cannot be deleted, the isolation drops stay, so that no
// network is left with its accepts and without its drops. Its sets go
// last, once no rule refers to them.
func (f *Firewall) removeAll(changes *[]string) error {
	accepts := f.removeChain(filter, Chain, forward, changes)
	errs := []error{accepts, f.removeChain(filter, InputChain, input, changes)}
	if accepts == nil {
		errs = append(errs, f.removeChain(mangle, IsolationChain, forward, changes))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return f.destroySets(changes)
}

// removeChain deletes this instance's rules from chain, and the chain and
// the jumps to it from `from` when no rule of anyone else is left in it.
func (f *Firewall) removeChain(table, chain, from string, changes *[]string) error {
	if ok, err := f.ipt.ChainExists(table, chain); err != nil || !ok {
		return err
	}
	if err := f.syncChain(table, chain, nil, nil, changes); err != nil {
		return err
	}
	lines, err := f.ipt.List(table, chain)
	if err != nil {
		return fmt.Errorf("iptables -t %s: list %s: %w", table, chain, err)
	}
	for _, line := range lines {
		if strings.HasPrefix(line, "-A ") {
			return nil // another instance's, or a rule felt cannot read: keep
		}
	}
	for {
		ok, err := f.ipt.Exists(table, from, "-j", chain)
		if err != nil {
			return fmt.Errorf("iptables -t %s: %w", table, err)
		}
		if !ok {
			break
		}
		if err := f.ipt.Delete(table, from, "-j", chain); err != nil {
			return fmt.Errorf("iptables -t %s: delete jump to %s: %w", table, chain, err)
		}
	}
	if err := f.ipt.ClearAndDeleteChain(table, chain); err != nil {
		return fmt.Errorf("iptables -t %s: delete chain %s: %w", table, chain, err)
	}
	*changes = append(*changes, fmt.Sprintf("deleted -t %s chain %s", table, chain))
	return nil
}
