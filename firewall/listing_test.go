package firewall

import (
	"slices"
	"testing"
)

func TestSplitRule(t *testing.T) {
	cases := []struct {
		line string
		want []string
	}{
		{`-s 10.1.0.0/16 -d 10.1.0.0/16 -m comment --comment "felt:a:felt-x" -j ACCEPT`,
			[]string{"-s", "10.1.0.0/16", "-d", "10.1.0.0/16", "-m", "comment", "--comment", "felt:a:felt-x", "-j", "ACCEPT"}},
		// As both flavours list them: interface names raw, comments quoted
		// with " and \ escaped.
		{`-i felt-a\b -m comment --comment "felt:a:felt-a\\b" -j DROP`,
			[]string{"-i", `felt-a\b`, "-m", "comment", "--comment", `felt:a:felt-a\b`, "-j", "DROP"}},
		{`-m comment --comment "a \"q\" b" -j RETURN`, []string{"-m", "comment", "--comment", `a "q" b`, "-j", "RETURN"}},
		{`-m comment --comment "" -j RETURN`, []string{"-m", "comment", "--comment", "", "-j", "RETURN"}},
		{`! -o br0  -j ACCEPT`, []string{"!", "-o", "br0", "-j", "ACCEPT"}},
	}
	for _, c := range cases {
		got, err := splitRule(c.line)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("splitRule(%q) = %q, %v; want %q", c.line, got, err, c.want)
		}
	}
	for _, bad := range []string{`--comment "open`, `--comment "ends in a backslash\"`} {
		if got, err := splitRule(bad); err == nil {
			t.Errorf("splitRule(%q) = %q, want an error", bad, got)
		}
	}
}

func TestRuleArgs(t *testing.T) {
	if _, ok, _ := ruleArgs("-N FELT", "FELT"); ok {
		t.Error("-N line taken for a rule")
	}
	if _, ok, _ := ruleArgs("-A FELTX -j DROP", "FELT"); ok {
		t.Error("a rule of another chain taken for one of FELT")
	}
	args, ok, err := ruleArgs(`-A FELT -m comment --comment "felt:i:b" -j DROP`, "FELT")
	if !ok || err != nil || commentOf(args) != "felt:i:b" {
		t.Errorf("got %q %v %v", args, ok, err)
	}
}

func FuzzSplitRule(f *testing.F) {
	f.Add(`-i felt-a\b -m comment --comment "felt:a:felt-a\\b" -j DROP`)
	f.Fuzz(func(t *testing.T, line string) { _, _ = splitRule(line) })
}

func TestRuleKeyIgnoresOrder(t *testing.T) {
	a := rule{"-s", "10.1.0.0/16", "-d", "10.1.0.0/16", "-m", "comment", "--comment", "felt:i:b", "-j", "RETURN"}
	b := rule{"-m", "comment", "--comment", "felt:i:b", "-s", "10.1.0.0/16", "-d", "10.1.0.0/16", "-j", "RETURN"}
	c := rule{"-s", "10.1.0.0/16", "-d", "10.1.0.0/16", "-m", "comment", "--comment", "felt:i:b", "-j", "ACCEPT"}
	if a.key() != b.key() || a.key() == c.key() {
		t.Errorf("keys: %q %q %q", a.key(), b.key(), c.key())
	}
}
