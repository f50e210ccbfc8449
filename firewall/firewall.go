// Package firewall keeps felt's iptables rules: one chain, jumped to first
// from FORWARD, that lets each felt pool talk to itself (same host and
// across hosts, whatever the FORWARD policy Docker sets) and nothing else.
// Traffic to the outside world leaves through Docker's docker_gwbridge, not
// the felt bridge, so the felt bridge never needs to forward anywhere else.
package firewall

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
)

// Chain is felt's chain in the filter table.
const Chain = "FELT"

const table = "filter"

// Network is what the rules of one felt network depend on.
type Network struct {
	Bridge string
	Pool   netip.Prefix
}

// Firewall programs this felt instance's rules in the FELT chain. Rules are
// tagged with the instance (its host ID), so two felt instances sharing a
// namespace (two plugins on one engine, say) leave each other's rules alone.
type Firewall struct {
	instance string
	ipt      *iptables.IPTables
	ns       netns.NsHandle
	log      *slog.Logger
	mu       sync.Mutex
}

// New finds the iptables flavour the host uses (see Detect) and returns a
// Firewall working in ns (a closed handle: the current namespace).
func New(ns netns.NsHandle, instance string, log *slog.Logger) (*Firewall, error) {
	if log == nil {
		log = slog.Default()
	}
	f := &Firewall{ns: ns, log: log, instance: instance}
	err := nsutil.Do(ns, func() error {
		path := Detect()
		ipt, err := iptables.New(iptables.Path(path), iptables.Timeout(5))
		if err != nil {
			return fmt.Errorf("iptables (%s): %w", path, err)
		}
		f.ipt = ipt
		log.Debug("using iptables", "path", path)
		return nil
	})
	return f, err
}

// Detect picks iptables-nft or iptables-legacy: the one already holding the
// most rules, i.e. the one Docker uses. A rule in the other flavour would be
// evaluated too, but could not override Docker's FORWARD DROP. FELT_IPTABLES
// overrides the choice.
func Detect() string {
	if p := os.Getenv("FELT_IPTABLES"); p != "" {
		return p
	}
	best, bestRules := "", -1
	for _, flavour := range []string{"iptables-nft", "iptables-legacy"} {
		path, err := exec.LookPath(flavour)
		if err != nil {
			continue
		}
		out, err := exec.Command(path+"-save", "-t", "filter").Output()
		if err != nil {
			continue
		}
		n := strings.Count(string(out), "\n-A ")
		if n > bestRules {
			best, bestRules = path, n
		}
	}
	if best == "" || bestRules == 0 {
		if p, err := exec.LookPath("iptables"); err == nil {
			return p
		}
	}
	if best == "" {
		return "iptables"
	}
	return best
}

func (f *Firewall) tag() string { return "felt:" + f.instance + ":" }

func (f *Firewall) comment(n Network) []string {
	return []string{"-m", "comment", "--comment", f.tag() + n.Bridge}
}

func (f *Firewall) accept(n Network) []string {
	return append([]string{"-s", n.Pool.String(), "-d", n.Pool.String()}, append(f.comment(n), "-j", "ACCEPT")...)
}

func (f *Firewall) drops(n Network) [][]string {
	return [][]string{
		append([]string{"-i", n.Bridge}, append(f.comment(n), "-j", "DROP")...),
		append([]string{"-d", n.Pool.String()}, append(f.comment(n), "-j", "DROP")...),
	}
}

// ensureChain creates the chain and the jump to it at the top of FORWARD.
func (f *Firewall) ensureChain() error {
	exists, err := f.ipt.ChainExists(table, Chain)
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	if !exists {
		if err := f.ipt.NewChain(table, Chain); err != nil {
			return fmt.Errorf("iptables: new chain %s: %w", Chain, err)
		}
	}
	rules, err := f.ipt.List(table, "FORWARD")
	if err != nil {
		return fmt.Errorf("iptables: list FORWARD: %w", err)
	}
	jump := "-A FORWARD -j " + Chain
	pos := -1
	for i, r := range rules[1:] { // rules[0] is the policy
		if r == jump {
			pos = i
			break
		}
	}
	// Keep the jump ahead of Docker's own rules (DOCKER-USER may come first:
	// it only returns unless the user put rules there on purpose).
	if pos < 0 || pos > 1 {
		if pos >= 0 {
			_ = f.ipt.Delete(table, "FORWARD", "-j", Chain)
		}
		if err := f.ipt.Insert(table, "FORWARD", 1, "-j", Chain); err != nil {
			return fmt.Errorf("iptables: jump to %s: %w", Chain, err)
		}
	}
	return nil
}

// Sync makes the chain hold exactly the rules of nets: accepts at the top,
// drops at the bottom, and no rule of a network that no longer exists. Pools
// never overlap, so one network's drops cannot shadow another's accept.
func (f *Firewall) Sync(nets []Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return nsutil.Do(f.ns, func() error {
		if err := f.ensureChain(); err != nil {
			return err
		}
		want := map[string]bool{}
		for _, n := range nets {
			want[n.Bridge] = true
		}
		// Remove rules of networks that are gone (also those of a previous run).
		rules, err := f.ipt.List(table, Chain)
		if err != nil {
			return fmt.Errorf("iptables: list %s: %w", Chain, err)
		}
		for _, r := range rules {
			br, ok := f.bridgeOfRule(r)
			if !ok || want[br] {
				continue
			}
			spec := strings.Fields(strings.TrimPrefix(r, "-A "+Chain+" "))
			if err := f.ipt.Delete(table, Chain, unquote(spec)...); err != nil {
				f.log.Warn("could not delete stale rule", "rule", r, "err", err)
			}
		}
		for _, n := range nets {
			ok, err := f.ipt.Exists(table, Chain, f.accept(n)...)
			if err != nil {
				return fmt.Errorf("iptables: %w", err)
			}
			if !ok {
				if err := f.ipt.Insert(table, Chain, 1, f.accept(n)...); err != nil {
					return fmt.Errorf("iptables: accept %s: %w", n.Pool, err)
				}
			}
			for _, d := range f.drops(n) {
				if err := f.ipt.AppendUnique(table, Chain, d...); err != nil {
					return fmt.Errorf("iptables: isolate %s: %w", n.Pool, err)
				}
			}
		}
		return nil
	})
}

// Remove deletes this instance's rules and, when no other instance has rules
// left, the chain and the jump to it (the plugin stops with no network).
func (f *Firewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return nsutil.Do(f.ns, func() error {
		if ok, _ := f.ipt.ChainExists(table, Chain); !ok {
			return nil
		}
		rules, err := f.ipt.List(table, Chain)
		if err != nil {
			return fmt.Errorf("iptables: list %s: %w", Chain, err)
		}
		others := 0
		for _, r := range rules {
			if !strings.HasPrefix(r, "-A ") {
				continue
			}
			if _, mine := f.bridgeOfRule(r); !mine {
				others++
				continue
			}
			spec := strings.Fields(strings.TrimPrefix(r, "-A "+Chain+" "))
			if err := f.ipt.Delete(table, Chain, unquote(spec)...); err != nil {
				return fmt.Errorf("iptables: %w", err)
			}
		}
		if others > 0 {
			return nil
		}
		_ = f.ipt.DeleteIfExists(table, "FORWARD", "-j", Chain)
		return f.ipt.ClearAndDeleteChain(table, Chain)
	})
}

// Rules lists the chain (for tests and inspection).
func (f *Firewall) Rules() ([]string, error) {
	var out []string
	err := nsutil.Do(f.ns, func() error {
		var err error
		out, err = f.ipt.List(table, Chain)
		return err
	})
	return out, err
}

// bridgeOfRule returns the bridge a rule of this instance is for.
func (f *Firewall) bridgeOfRule(rule string) (string, bool) {
	i := strings.Index(rule, f.tag())
	if i < 0 {
		return "", false
	}
	rest := strings.Trim(rule[i+len(f.tag()):], "\"")
	if j := strings.IndexAny(rest, " \""); j >= 0 {
		rest = rest[:j]
	}
	return rest, rest != ""
}

func unquote(spec []string) []string {
	out := make([]string, len(spec))
	for i, s := range spec {
		out[i] = strings.Trim(s, "\"")
	}
	return out
}
