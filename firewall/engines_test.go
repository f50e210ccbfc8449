package firewall_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/felt-net/felt/testkit"
)

// What each Docker engine does to the filter table at the events that
// reorder FORWARD, replayed command by command as the engine runs them
// (read in moby's source: v20.10.24 vendor/github.com/docker/libnetwork
// drivers/bridge/setup_ip_tables.go and firewall_linux.go, v26.1.5
// libnetwork/drivers/bridge/setup_ip_tables_linux.go and controller.go,
// docker-v29.7.2 daemon/libnetwork/drivers/bridge/internal/iptabler and
// firewall_linux.go). 20.10 and 26 run the same code here: per-bridge rules
// inserted at the top of FORWARD, then DOCKER-USER moved back above them at
// every network creation. 29 keeps per-bridge rules in its own chains, and
// puts DOCKER-FORWARD and DOCKER-USER back at the top when dockerd starts.
type docker struct {
	l    *lab
	t    *testing.T
	path string
}

func (d docker) run(args ...string) { d.t.Helper(); d.l.ipt(d.t, d.path, args...) }

func (d docker) exists(chain string, args ...string) bool {
	_, err := d.l.host.Run(d.path, append([]string{"-w", "-C", chain}, args...)...)
	return err == nil
}

func (d docker) chainExists(chain string) bool {
	_, err := d.l.host.Run(d.path, "-w", "-n", "-L", chain)
	return err == nil
}

// newChain is iptables.NewChain: create unless it exists (never flushed).
func (d docker) newChain(chain string) {
	if !d.chainExists(chain) {
		d.run("-N", chain)
	}
}

// insert is programChainRule/Rule.Insert: -I at the top unless present.
func (d docker) insert(chain string, args ...string) {
	if !d.exists(chain, args...) {
		d.run(append([]string{"-I", chain}, args...)...)
	}
}

func (d docker) appendRule(chain string, args ...string) {
	if !d.exists(chain, args...) {
		d.run(append([]string{"-A", chain}, args...)...)
	}
}

// ensureJump is IPTable.EnsureJumpRule: delete the jump, insert it first.
func (d docker) ensureJump(from, to string) {
	if d.exists(from, "-j", to) {
		d.run("-D", from, "-j", to)
	}
	d.run("-I", from, "-j", to)
}

// userChain20 is 20.10/26's setupUserChain, run at start and at the end of
// every NewNetwork: the chain, its RETURN, and the jump moved to the top.
func (d docker) userChain20() {
	d.newChain("DOCKER-USER")
	d.appendRule("DOCKER-USER", "-j", "RETURN")
	d.ensureJump("FORWARD", "DOCKER-USER")
}

// bridge20 is 20.10/26 creating a bridge network's filter rules.
func (d docker) bridge20(br string, icc bool) {
	d.newChain("DOCKER")
	d.newChain("DOCKER-ISOLATION-STAGE-1")
	d.newChain("DOCKER-ISOLATION-STAGE-2")
	d.appendRule("DOCKER-ISOLATION-STAGE-1", "-j", "RETURN")
	d.appendRule("DOCKER-ISOLATION-STAGE-2", "-j", "RETURN")
	if icc {
		d.insert("FORWARD", "-i", br, "-o", br, "-j", "ACCEPT")
	} else {
		d.appendRule("FORWARD", "-i", br, "-o", br, "-j", "DROP")
	}
	d.insert("FORWARD", "-i", br, "!", "-o", br, "-j", "ACCEPT")
	d.insert("FORWARD", "-o", br, "-j", "DOCKER")
	d.insert("FORWARD", "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
	d.insert("DOCKER-ISOLATION-STAGE-1", "-i", br, "!", "-o", br, "-j", "DOCKER-ISOLATION-STAGE-2")
	d.insert("DOCKER-ISOLATION-STAGE-2", "-o", br, "-j", "DROP")
	d.ensureJump("FORWARD", "DOCKER-ISOLATION-STAGE-1")
	d.userChain20()
}

// start20 is dockerd 20.10/26 starting: FORWARD policy DROP, docker0.
func (d docker) start20() {
	d.run("-P", "FORWARD", "DROP")
	d.userChain20()
	d.bridge20("docker0", true)
}

// gwbridge20 is 20.10/26 creating docker_gwbridge (ICC off) when the first
// container of a network without a gateway of its own starts.
func (d docker) gwbridge20() { d.bridge20("docker_gwbridge", false) }

// chains29 are dockerd 29's own chains, made afresh at every start.
var chains29 = []string{"DOCKER", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-FORWARD", "DOCKER-INTERNAL"}

// bridge29 is 29 adding a bridge network's rules, all in its own chains.
func (d docker) bridge29(br string, icc bool) {
	d.appendRule("DOCKER-CT", "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
	d.appendRule("DOCKER-BRIDGE", "-o", br, "-j", "DOCKER")
	d.appendRule("DOCKER", "!", "-i", br, "-o", br, "-j", "DROP")
	if icc {
		d.appendRule("DOCKER-FORWARD", "-i", br, "-j", "ACCEPT")
	} else {
		d.appendRule("DOCKER-FORWARD", "-i", br, "-o", br, "-j", "DROP")
		d.appendRule("DOCKER-FORWARD", "-i", br, "!", "-o", br, "-j", "ACCEPT")
	}
}

// start29 is dockerd 29 starting: its chains removed and made again, the
// jumps to DOCKER-FORWARD and then DOCKER-USER put first, the bridges that
// exist (docker0, and docker_gwbridge when gw) programmed again.
func (d docker) start29(gw bool) {
	d.run("-P", "FORWARD", "DROP")
	if d.exists("FORWARD", "-j", "DOCKER-FORWARD") {
		d.run("-D", "FORWARD", "-j", "DOCKER-FORWARD")
	}
	for _, c := range chains29 { // RemoveExistingChain: flush, then delete
		if d.chainExists(c) {
			d.run("-F", c)
		}
	}
	for _, c := range chains29 {
		if d.chainExists(c) {
			d.run("-X", c)
		}
	}
	for _, c := range chains29 {
		d.newChain(c)
	}
	d.appendRule("DOCKER-FORWARD", "-j", "DOCKER-CT")
	d.appendRule("DOCKER-FORWARD", "-j", "DOCKER-INTERNAL")
	d.appendRule("DOCKER-FORWARD", "-j", "DOCKER-BRIDGE")
	d.ensureJump("FORWARD", "DOCKER-FORWARD")
	d.newChain("DOCKER-USER") // 29 adds no RETURN: an empty chain returns
	d.ensureJump("FORWARD", "DOCKER-USER")
	d.bridge29("docker0", true)
	if gw {
		d.bridge29("docker_gwbridge", false)
	}
}

// nft29 is dockerd 29 with --firewall-backend=nftables: its own table
// (moby's nftablesdoc: filter-FORWARD at priority filter, policy accept,
// verdict maps by bridge name), which accepts docker_gwbridge's outgoing
// traffic whatever felt's iptables rules say; no DOCKER-USER, and no
// iptables rule at all.
func (d docker) nft29() {
	d.t.Helper()
	script := `
table ip docker-bridges {
	chain filter-forward-in__docker0 {
		ct state established,related counter accept
		iifname "docker0" counter accept comment "ICC"
		counter drop comment "UNPUBLISHED PORT DROP"
	}
	chain filter-forward-out__docker0 {
		ct state established,related counter accept
		counter accept comment "OUTGOING"
	}
	chain filter-forward-in__docker_gwbridge {
		ct state established,related counter accept
		iifname "docker_gwbridge" counter drop comment "ICC"
		counter drop comment "UNPUBLISHED PORT DROP"
	}
	chain filter-forward-out__docker_gwbridge {
		ct state established,related counter accept
		counter accept comment "OUTGOING"
	}
	map filter-forward-in-jumps {
		type ifname : verdict
		elements = { "docker0" : jump filter-forward-in__docker0,
			     "docker_gwbridge" : jump filter-forward-in__docker_gwbridge }
	}
	map filter-forward-out-jumps {
		type ifname : verdict
		elements = { "docker0" : jump filter-forward-out__docker0,
			     "docker_gwbridge" : jump filter-forward-out__docker_gwbridge }
	}
	chain filter-FORWARD {
		type filter hook forward priority filter; policy accept;
		oifname vmap @filter-forward-in-jumps
		iifname vmap @filter-forward-out-jumps
	}
}
`
	file := filepath.Join(d.t.TempDir(), "docker.nft")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		d.t.Fatal(err)
	}
	if out, err := d.l.host.Run("nft", "-f", file); err != nil {
		d.t.Fatalf("nft -f: %v\n%s", err, out)
	}
}

// An engine scenario: what Docker did before felt set up, and what it does
// after. felt syncs its networks in between and is never told of the later
// events, as in real life until its next resync.
var scenarios = []struct {
	name          string
	before, after func(docker)
}{
	{"no Docker, FORWARD policy ACCEPT", func(docker) {}, func(docker) {}},
	{"20.10 and 26: docker_gwbridge created after felt networks",
		func(d docker) { d.start20() }, func(d docker) { d.gwbridge20() }},
	{"20.10 and 26: dockerd starts after felt",
		func(docker) {}, func(d docker) { d.start20(); d.gwbridge20() }},
	{"29: docker_gwbridge created after felt networks",
		func(d docker) { d.start29(false) }, func(d docker) { d.bridge29("docker_gwbridge", false) }},
	{"29: dockerd restarts after felt",
		func(d docker) { d.start29(true) }, func(d docker) { d.start29(true) }},
	{"29 with the nftables backend", func(docker) {}, func(d docker) { d.nft29() }},
}

// Isolation holds whatever order Docker puts its rules in and whenever it
// does so: felt networks reach their own pool (on the same bridge and
// through an overlay link, under Docker's FORWARD policy DROP) and nothing
// else, and no other network reaches them, with real pings after each
// engine's reordering and before felt could react.
func TestIsolationSurvivesDockerOrdering(t *testing.T) {
	for _, path := range flavours(t) {
		for _, sc := range scenarios {
			t.Run(shortName(path)+"/"+sc.name, func(t *testing.T) {
				if strings.Contains(sc.name, "nftables") {
					if _, err := exec.LookPath("nft"); err != nil {
						testkit.Unavailable(t, "no nft command: %v", err)
					}
				}
				l := newLab(t)
				l.check(t, false) // control: with no rule every flow passes
				d := docker{l: l, t: t, path: path}
				sc.before(d)
				fw := newFirewall(t, l.host, path, "inst0001")
				mustSync(t, fw, redNet, blueNet)
				sc.after(d)
				l.check(t, true)
				if t.Failed() {
					t.Logf("filter table:\n%s", l.save(t, path, "filter"))
					t.Logf("mangle table:\n%s", l.save(t, path, "mangle"))
				}
			})
		}
	}
}

func shortName(path string) string { return path[strings.LastIndex(path, "/")+1:] }

func (l *lab) save(t *testing.T, path, table string) string {
	out, err := l.host.Run(path+"-save", "-t", table)
	if err != nil {
		return err.Error()
	}
	return out
}
