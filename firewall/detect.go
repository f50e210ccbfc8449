package firewall

import (
	"os/exec"
	"strings"
)

// Detect picks iptables-nft or iptables-legacy: the one already holding the
// most rules, i.e. the one Docker uses. felt's drops would hold in either
// (a drop is final in any table of either), but its accepts must sit in the
// FORWARD chain whose policy Docker set to DROP. With neither holding rules
// (no Docker yet, or Docker's nftables backend) it is the system's iptables.
// The plugin's FELT_IPTABLES setting overrides the choice (see New).
func Detect() string {
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
