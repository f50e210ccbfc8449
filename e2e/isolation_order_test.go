package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
)

// gwNet is what `docker network inspect` says of docker_gwbridge that is
// needed to make it again as it was.
type gwNet struct {
	Driver string
	IPAM   struct {
		Config []struct{ Subnet, Gateway string }
	}
	Options    map[string]string
	Labels     map[string]string
	Containers map[string]json.RawMessage
}

func inspectGwbridge(t testing.TB) (gwNet, bool) {
	t.Helper()
	out, err := docker("network", "inspect", "--format", "{{json .}}", "docker_gwbridge")
	if err != nil {
		return gwNet{}, false
	}
	var n gwNet
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		t.Fatalf("docker_gwbridge: %v\n%s", err, out)
	}
	return n, true
}

// withoutGwbridge removes docker_gwbridge for the test and puts it back as
// it was afterwards (Docker makes it again for the test's containers, with
// its defaults; a different one is replaced by the recorded one). A
// gwbridge some container uses is left alone and the test skipped.
func withoutGwbridge(t *testing.T) {
	t.Helper()
	was, ok := inspectGwbridge(t)
	if !ok {
		return
	}
	if len(was.Containers) > 0 {
		t.Skipf("docker_gwbridge is in use by %d containers: not removing it", len(was.Containers))
	}
	mustDocker(t, "network", "rm", "docker_gwbridge")
	t.Cleanup(func() {
		now, ok := inspectGwbridge(t)
		if ok && len(now.Containers) > 0 {
			t.Errorf("docker_gwbridge still used by %d containers: not restored", len(now.Containers))
			return
		}
		if ok && sameGwbridge(was, now) {
			return
		}
		if ok {
			if out, err := docker("network", "rm", "docker_gwbridge"); err != nil {
				t.Errorf("restoring docker_gwbridge: %v\n%s", err, out)
				return
			}
		}
		args := []string{"network", "create", "--driver", was.Driver}
		for _, c := range was.IPAM.Config {
			if c.Subnet != "" {
				args = append(args, "--subnet", c.Subnet)
			}
			if c.Gateway != "" {
				args = append(args, "--gateway", c.Gateway)
			}
		}
		for k, v := range was.Options {
			args = append(args, "-o", k+"="+v)
		}
		for k, v := range was.Labels {
			args = append(args, "--label", k+"="+v)
		}
		if out, err := docker(append(args, "docker_gwbridge")...); err != nil {
			t.Errorf("restoring docker_gwbridge: %v\n%s", err, out)
		}
	})
}

func sameGwbridge(a, b gwNet) bool {
	ja, _ := json.Marshal([]any{a.Driver, a.IPAM, a.Options, a.Labels})
	jb, _ := json.Marshal([]any{b.Driver, b.IPAM, b.Options, b.Labels})
	return string(ja) == string(jb)
}

func forwardRules(t testing.TB) []string {
	t.Helper()
	out := testkit.MustRun(t, "iptables", "-S", "FORWARD")
	var rules []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-") { // not the warnings iptables-nft prints
			rules = append(rules, l)
		}
	}
	return rules
}

// The isolation leak of issue 8: felt networks made before docker_gwbridge
// exists; the first container start makes Docker create it, and Docker
// (20.10, 26) inserts `-i docker_gwbridge ! -o docker_gwbridge -j ACCEPT`
// at the top of FORWARD, above felt's jump. The isolation must not depend on
// that order: red cannot reach blue (through docker_gwbridge, its default
// route), a container on Docker's own bridge network cannot reach either,
// and containers of one network reach each other.
func TestIsolationOrderGwbridgeAfterFelt(t *testing.T) {
	withoutGwbridge(t)
	network(t, "felt-ord-red", "--subnet", "10.61.0.0/16")
	network(t, "felt-ord-blue", "--subnet", "10.62.0.0/16")
	blue := container(t, "felt-ord-blue1", "felt-ord-blue") // Docker creates docker_gwbridge now
	container(t, "felt-ord-blue2", "felt-ord-blue")
	red := container(t, "felt-ord-red1", "felt-ord-red")
	plain := container(t, "felt-ord-plain", "bridge")
	if _, ok := inspectGwbridge(t); !ok {
		t.Fatal("Docker did not create docker_gwbridge for the felt containers")
	}
	fwd := forwardRules(t)
	gwAccept := slices.Index(fwd, "-A FORWARD -i docker_gwbridge ! -o docker_gwbridge -j ACCEPT")
	feltJump := slices.Index(fwd, "-A FORWARD -j FELT")
	t.Logf("FORWARD after docker_gwbridge was created (gwbridge ACCEPT at %d, felt's jump at %d):\n%s",
		gwAccept, feltJump, strings.Join(fwd, "\n"))
	if gwAccept >= 0 && feltJump >= 0 && gwAccept > feltJump {
		t.Logf("this engine did not put docker_gwbridge's ACCEPT above felt's jump: the leak's precondition did not arise")
	}

	pingFrom := func(ctr, ip string) (string, error) {
		return docker("exec", ctr, "ping", "-c", "1", "-W", "2", ip)
	}
	for _, c := range []struct{ from, to, what string }{
		{"felt-ord-red1", blue, "red to blue"},
		{"felt-ord-blue1", red, "blue to red"},
		{"felt-ord-plain", blue, "a Docker bridge network to blue"},
		{"felt-ord-plain", red, "a Docker bridge network to red"},
	} {
		if out, err := pingFrom(c.from, c.to); err == nil {
			t.Errorf("%s: %s reached %s:\n%s", c.what, c.from, c.to, out)
		}
	}
	if out, err := pingFrom("felt-ord-blue2", blue); err != nil {
		t.Errorf("same-network ping failed: %v\n%s", err, out)
	}
	if out, err := pingFrom("felt-ord-plain", plain); err != nil {
		t.Errorf("the Docker bridge container cannot reach itself (test broken?): %v\n%s", err, out)
	}
}

// Whoever flushes or unhooks felt's isolation chain (a firewall script, a
// reload), the plugin puts it back at its next resync (FELT_RESYNC_INTERVAL,
// 30 s by default), and the isolation holds again.
func TestIsolationRulesRepaired(t *testing.T) {
	network(t, "felt-rep-red", "--subnet", "10.63.0.0/16")
	network(t, "felt-rep-blue", "--subnet", "10.64.0.0/16")
	blue := container(t, "felt-rep-blue1", "felt-rep-blue")
	container(t, "felt-rep-red1", "felt-rep-red")
	ipt := func(args ...string) string {
		t.Helper()
		return testkit.MustRun(t, append([]string{"iptables"}, args...)...)
	}
	// The chain's rules, in no order: a repair may order networks
	// differently, which does not matter (pools never overlap).
	isolation := func() string {
		var rules []string
		for _, l := range strings.Split(ipt("-t", "mangle", "-S", "FELT-ISOLATION"), "\n") {
			if strings.HasPrefix(l, "-A ") {
				rules = append(rules, l)
			}
		}
		slices.Sort(rules)
		return strings.Join(rules, "\n")
	}
	// The rules are the same for any networks (the pools are in ipsets:
	// firewall/rules.go); that they isolate blue is the ping below.
	want := isolation()
	if !strings.Contains(want, "-j DROP") {
		t.Fatalf("no isolation rule:\n%s", want)
	}
	ipt("-t", "mangle", "-F", "FELT-ISOLATION")
	ipt("-t", "mangle", "-D", "FORWARD", "-j", "FELT-ISOLATION")
	deadline := time.Now().Add(90 * time.Second)
	for isolation() != want || !strings.HasPrefix(firstRule(ipt("-t", "mangle", "-S", "FORWARD")), "-A FORWARD -j FELT-ISOLATION") {
		if time.Now().After(deadline) {
			t.Fatalf("isolation chain not repaired within 90 s:\n%s\nwant:\n%s\n%s", isolation(), want, ipt("-t", "mangle", "-S", "FORWARD"))
		}
		time.Sleep(time.Second)
	}
	if out, err := docker("exec", "felt-rep-red1", "ping", "-c", "1", "-W", "2", blue); err == nil {
		t.Errorf("red reached blue after the repair:\n%s", out)
	}
}

func firstRule(listing string) string {
	for _, l := range strings.Split(listing, "\n") {
		if strings.HasPrefix(l, "-A ") {
			return l
		}
	}
	return ""
}

// inEchos is how many ICMP echo requests ctr has received (its namespace's
// Icmp InEchos counter).
func inEchos(t *testing.T, ctr string) string {
	t.Helper()
	out := mustDocker(t, "exec", ctr, "cat", "/proc/net/snmp")
	var names []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "InEchos"); i >= 0 && i < len(f) {
			return f[i]
		}
	}
	t.Fatalf("no Icmp InEchos in %s's /proc/net/snmp:\n%s", ctr, out)
	return ""
}

// A container that forges a source address of another felt network's pool
// (CAP_NET_RAW, a Docker default, suffices; here NET_ADMIN gives it the
// address, which sends the same packets) does not get into that network:
// not from a felt network (through docker_gwbridge, its default route),
// not from Docker's default bridge network. Red's echo request counter
// does not move; a genuine ping from red's own network does move it.
func TestIsolationForgedSource(t *testing.T) {
	network(t, "felt-forge-red", "--subnet", "10.66.0.0/16")
	network(t, "felt-forge-blue", "--subnet", "10.67.0.0/16")
	red := container(t, "felt-forge-red1", "felt-forge-red")
	container(t, "felt-forge-red2", "felt-forge-red")
	container(t, "felt-forge-blue1", "felt-forge-blue", "--cap-add", "NET_ADMIN")
	container(t, "felt-forge-plain", "bridge", "--cap-add", "NET_ADMIN")
	for _, c := range []struct{ ctr, dev, forged string }{
		{"felt-forge-blue1", "eth1", "10.66.250.9"}, // eth1: docker_gwbridge
		{"felt-forge-plain", "eth0", "10.66.250.8"},
	} {
		mustDocker(t, "exec", c.ctr, "ip", "addr", "add", c.forged+"/32", "dev", c.dev)
		before := inEchos(t, "felt-forge-red1")
		// No reply can come back (nothing routes the forged address to
		// the forger): only red's counter tells whether it got through.
		_, _ = docker("exec", c.ctr, "ping", "-c", "3", "-W", "1", "-I", c.forged, red)
		if after := inEchos(t, "felt-forge-red1"); after != before {
			t.Errorf("%s, forging %s, got echo requests into red (InEchos %s -> %s)", c.ctr, c.forged, before, after)
		}
	}
	before := inEchos(t, "felt-forge-red1")
	if out, err := docker("exec", "felt-forge-red2", "ping", "-c", "1", "-W", "2", red); err != nil {
		t.Fatalf("same-network ping failed: %v\n%s", err, out)
	}
	if after := inEchos(t, "felt-forge-red1"); after == before {
		t.Errorf("a genuine ping did not move red's InEchos (%s): the counter tells nothing", before)
	}
}
