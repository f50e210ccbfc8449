package firewall_test

import (
	"strings"
	"testing"

	"github.com/felt-net/felt/testkit/netns"
)

// A felt whose state directory was wiped removes its earlier instance's
// rules (which no felt would delete otherwise), keeping those of another
// felt sharing the namespace and its own; a chain left empty goes with its
// jump. Its own instance and malformed ones are refused.
func TestForgetInstanceRemovesOnlyThatInstancesRules(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		ns := netns.New(t, "fw")
		old := newFirewall(t, ns, path, "0a1b2c3d")
		other := newFirewall(t, ns, path, "4e5f6a7b")
		cur := newFirewall(t, ns, path, "99aabbcc")
		mustSync(t, old, redNet)
		mustSync(t, other, blueNet)
		count := func(inst string) int {
			n := 0
			for _, r := range feltRules(t, ns, path) {
				if strings.Contains(r, "felt:"+inst+":") {
					n++
				}
			}
			return n
		}
		if count("0a1b2c3d") == 0 || count("4e5f6a7b") == 0 {
			t.Fatalf("rules missing before the test: %q", feltRules(t, ns, path))
		}
		otherRules := count("4e5f6a7b")

		if err := cur.ForgetInstance("0a1b2c3d"); err != nil {
			t.Fatal(err)
		}
		if n := count("0a1b2c3d"); n != 0 {
			t.Errorf("%d rules of the forgotten instance stay: %q", n, feltRules(t, ns, path))
		}
		if n := count("4e5f6a7b"); n != otherRules {
			t.Errorf("another instance has %d rules, had %d: %q", n, otherRules, feltRules(t, ns, path))
		}
		if err := cur.ForgetInstance("0a1b2c3d"); err != nil {
			t.Fatalf("a second ForgetInstance: %v", err)
		}

		for _, bad := range []string{"99aabbcc", "", "0a1b2c3", "4E5F6A7B", "4e5f6a7b:", ".*"} {
			if err := cur.ForgetInstance(bad); err == nil {
				t.Errorf("ForgetInstance(%q) did not fail", bad)
			}
		}
		if n := count("4e5f6a7b"); n != otherRules {
			t.Fatalf("a refused ForgetInstance removed rules: %q", feltRules(t, ns, path))
		}

		// The last instance with rules forgotten: nothing of felt's stays.
		if err := cur.ForgetInstance("4e5f6a7b"); err != nil {
			t.Fatal(err)
		}
		out, err := ns.Run(path + "-save")
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if strings.Contains(out, "FELT") {
			t.Fatalf("felt's chains or jumps stay with no rules in them:\n%s", out)
		}
	})
}
