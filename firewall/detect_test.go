package firewall

import "testing"

func TestPickFlavour(t *testing.T) {
	const nft, legacy, system = "/usr/sbin/iptables-nft", "/usr/sbin/iptables-legacy", "/usr/sbin/iptables"
	for _, c := range []struct {
		name   string
		found  []flavour
		system string
		want   string
	}{
		{"Docker's rules in legacy", []flavour{{nft, 0}, {legacy, 12}}, system, legacy},
		{"Docker's rules in nft", []flavour{{nft, 12}, {legacy, 2}}, system, nft},
		{"a tie goes to nft", []flavour{{nft, 3}, {legacy, 3}}, system, nft},
		{"no rules anywhere: the system's", []flavour{{nft, 0}, {legacy, 0}}, system, system},
		{"no rules, no system iptables: nft", []flavour{{nft, 0}, {legacy, 0}}, "", nft},
		{"only legacy, with rules", []flavour{{legacy, 1}}, system, legacy},
		{"no flavour: the system's", nil, system, system},
		{"nothing found: iptables from PATH", nil, "", "iptables"},
	} {
		if got := pick(c.found, c.system); got != c.want {
			t.Errorf("%s: pick = %s, want %s", c.name, got, c.want)
		}
	}
}
