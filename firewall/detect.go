package firewall

import (
	"os/exec"
	"strings"
)

// detect picks iptables-nft or iptables-legacy: the one already holding the
// most rules, i.e. the one Docker uses. felt's drops would hold in either
// (a drop is final in any table of either), but its accepts must sit in the
// FORWARD chain whose policy Docker set to DROP. With neither holding rules
// (no Docker yet, or Docker's nftables backend) it is the system's iptables.
// The plugin's FELT_IPTABLES setting, passed to New, overrides the choice.
func detect() string {
	var found []flavour
	for _, name := range []string{"iptables-nft", "iptables-legacy"} {
		path, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		out, err := exec.Command(path+"-save", "-t", "filter").Output()
		if err != nil {
			continue
		}
		found = append(found, flavour{path, strings.Count(string(out), "\n-A ")})
	}
	system, _ := exec.LookPath("iptables")
	return pick(found, system)
}

// flavour is an iptables command found, with the number of rules its
// -save lists in the filter table.
type flavour struct {
	path  string
	rules int
}

// pick is detect's choice among the flavours found (nft first: it wins a
// tie) and the system's iptables ("" when not found).
func pick(found []flavour, system string) string {
	best, bestRules := "", -1
	for _, f := range found {
		if f.rules > bestRules {
			best, bestRules = f.path, f.rules
		}
	}
	if (best == "" || bestRules == 0) && system != "" {
		return system
	}
	if best == "" {
		return "iptables"
	}
	return best
}
