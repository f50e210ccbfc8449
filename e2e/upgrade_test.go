package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/testkit"
)

// TestUpgradeInPlace: two hosts run felt 0.0.1 from a registry, with
// containers on a network of every backend; each host in turn upgrades to
// 0.0.2 with Docker's own commands (docker plugin disable -f, docker plugin
// upgrade, docker plugin enable) while pings cross between the hosts.
// vxlan and host-gw forward throughout (the kernel carries them; felt is only
// their control plane), udp resumes once felt is back. The new felt reads the
// old one's state: old containers stop and go cleanly, new ones start in the
// same host subnets and reach the old ones, the networks go, and nothing
// remains in Consul (but the format record), the hosts' kernels or Docker.
func TestUpgradeInPlace(t *testing.T) {
	regLabAvailable(t)
	const v1, v2 = "0.0.1-e2e.upgrade", "0.0.2-e2e.upgrade"
	// An alias: the name networks use stays the same across upgrades,
	// whatever version runs under it.
	const name = "felt-up:latest"
	l := newRegLab(t, "felt-up", 96, 2)
	h1, h2 := l.Hosts[0], l.Hosts[1]

	ref1 := l.release(t, h1, v1)
	ref2 := l.release(t, h1, v2)
	for _, h := range l.Hosts {
		l.install(t, h, ref1, name)
		l.pluginVersionLogged(t, h, v1)
	}

	backends := []struct {
		name, pool string
		opts       []string
		forwards   bool // keeps forwarding while felt is down
	}{
		{"vxlan", "10.92.0.0/16", nil, true},
		{"host-gw", "10.93.0.0/16", []string{"-o", "backend=host-gw"}, true},
		{"udp", "10.94.0.0/16", []string{"-o", "backend=udp"}, false},
	}
	netName := func(b string) string { return "felt-up-" + b }
	ctrName := func(h regHost, b, gen string) string { return fmt.Sprintf("%s-%s-%s", h.ns, b, gen) }
	run := func(h regHost, b, gen string) netip.Addr {
		t.Helper()
		c := ctrName(h, b, gen)
		h.must(t, "run", "-d", "--name", c, "--network", netName(b), image, "sleep", "1d")
		t.Cleanup(func() { _, _ = h.docker("rm", "-f", c) })
		return ctrIP(t, h, c, netName(b))
	}
	old := map[string]map[string]netip.Addr{} // backend → host → the old container's address
	for _, b := range backends {
		old[b.name] = map[string]netip.Addr{}
		for _, h := range l.Hosts {
			h.must(t, append(append([]string{"network", "create", "-d", name, "--ipam-driver", name, "--subnet", b.pool}, b.opts...), netName(b.name))...)
			t.Cleanup(func() { _, _ = h.docker("network", "rm", netName(b.name)) })
			old[b.name][h.ns] = run(h, b.name, "old")
		}
		pingUntil(t, h1.engine, ctrName(h1, b.name, "old"), old[b.name][h2.ns].String())
		pingUntil(t, h2.engine, ctrName(h2, b.name, "old"), old[b.name][h1.ns].String())
	}

	// A ping on every backend from host 1 to host 2, running until the
	// upgrade of both hosts is over: 5 a second, each numbered.
	for _, b := range backends {
		h1.must(t, "exec", "-d", ctrName(h1, b.name, "old"), "sh", "-c",
			fmt.Sprintf("ping -i 0.2 %s >/tmp/upgrade-ping.log 2>&1", old[b.name][h2.ns]))
	}
	for _, b := range backends {
		waitReplies(t, h1, ctrName(h1, b.name, "old"), 5)
	}

	for _, h := range l.Hosts {
		// Docker's rules, which the README's upgrade steps follow: a
		// plugin is upgraded only while disabled, and one that networks
		// use is disabled only with -f.
		if out, err := h.docker("plugin", "upgrade", "--grant-all-permissions", name, ref2); err == nil || !strings.Contains(out, "disabled") {
			t.Fatalf("%s: docker plugin upgrade of an enabled plugin: %v, %s; want Docker to ask for it disabled", h.ns, err, out)
		}
		if out, err := h.docker("plugin", "disable", name); err == nil || !strings.Contains(out, "in use") {
			t.Fatalf("%s: docker plugin disable of a plugin in use: %v, %s; want Docker to refuse", h.ns, err, out)
		}
		h.must(t, "plugin", "disable", "-f", name)
		// To another reference (a new tag) the CLI asks "Plugin images do
		// not match, are you sure? [y/N]"; without a terminal to answer
		// it, it does nothing and exits 0. Scripts need --skip-remote-check.
		if out := h.must(t, "plugin", "upgrade", "--grant-all-permissions", name, ref2); !strings.Contains(out, "are you sure") {
			t.Logf("%s: docker plugin upgrade without --skip-remote-check no longer asks: %q", h.ns, out)
		}
		if got := h.must(t, "plugin", "inspect", "-f", "{{.PluginReference}}", name); got != ref1 {
			t.Logf("%s: docker plugin upgrade without --skip-remote-check upgraded to %s unasked", h.ns, got)
		}
		h.must(t, "plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check", name, ref2)
		// Docker 20.10 keeps the settings (inspect shows them) but mounts
		// the new config's default state source, /var/lib/felt, unless
		// state.source is set again: it would fail to enable here, and on
		// a host with both directories start with empty state.
		h.must(t, "plugin", "set", name, "state.source="+h.state)
		h.must(t, "plugin", "enable", name)
		l.pluginVersionLogged(t, h, v2)
		if got := h.must(t, "plugin", "inspect", "-f", "{{.PluginReference}}", name); got != ref2 {
			t.Fatalf("%s: %s runs %s after the upgrade; want %s", h.ns, name, got, ref2)
		}
		if env := h.must(t, "plugin", "inspect", "-f", "{{.Settings.Env}}", name); !strings.Contains(env, "CONSUL_HTTP_ADDR="+l.Consul.Addr) {
			t.Fatalf("%s: settings after the upgrade %s; want those given at install kept", h.ns, env)
		}
	}
	// udp's data path is felt itself: it resumes now.
	pingUntil(t, h1.engine, ctrName(h1, "udp", "old"), old["udp"][h2.ns].String())
	pingUntil(t, h2.engine, ctrName(h2, "udp", "old"), old["udp"][h1.ns].String())
	for _, b := range backends {
		sent, lost := stopPing(t, h1, ctrName(h1, b.name, "old"))
		t.Logf("%s: %d pings across both upgrades, lost: %v", b.name, sent, lost)
		// The ping interrupted at the end may miss its answer; beyond
		// that, a kernel backend must not lose one.
		if b.forwards && len(lost) > 1 {
			t.Errorf("%s: %d of %d pings lost during the upgrade (seq %v): vxlan and host-gw must keep forwarding while felt restarts", b.name, len(lost), sent, lost)
		}
	}

	// The new felt reads the old one's state: new containers get
	// addresses in the host subnets the old felt leased, and reach the old
	// containers across hosts.
	for _, b := range backends {
		fresh := map[string]netip.Addr{}
		for _, h := range l.Hosts {
			fresh[h.ns] = run(h, b.name, "new")
			was := netip.PrefixFrom(old[b.name][h.ns], 24).Masked()
			if !was.Contains(fresh[h.ns]) {
				t.Errorf("%s on %s: a new container got %s, outside the host's subnet %s of before the upgrade", b.name, h.ns, fresh[h.ns], was)
			}
		}
		pingUntil(t, h1.engine, ctrName(h1, b.name, "new"), old[b.name][h2.ns].String())
		pingUntil(t, h2.engine, ctrName(h2, b.name, "new"), fresh[h1.ns].String())
	}

	// Everything goes cleanly: containers from before the upgrade and
	// after, then the networks.
	for _, h := range l.Hosts {
		for _, b := range backends {
			for _, gen := range []string{"old", "new"} {
				h.must(t, "stop", "-t", "1", ctrName(h, b.name, gen))
				h.must(t, "rm", ctrName(h, b.name, gen))
			}
		}
		for _, b := range backends {
			h.must(t, "network", "rm", netName(b.name))
		}
	}
	keys := l.consulKeys(t)
	if want := `{"version":1,"writer":"felt ` + v1 + `"}`; keys["felt/format"] != want {
		t.Errorf("shared format record %q; want %s, written by the first felt and kept", keys["felt/format"], want)
	}
	delete(keys, "felt/format")
	// The cluster's epoch (cluster networks) belongs to the store, not to
	// a network: it stays, so that a removal is told from a wiped store.
	if keys["felt/cluster-epoch"] == "" {
		t.Errorf("no cluster epoch in Consul: cluster networks were off on every host")
	}
	delete(keys, "felt/cluster-epoch")
	if len(keys) > 0 {
		t.Errorf("Consul still holds, with every network removed: %v", keys)
	}
	for _, h := range l.Hosts {
		// Nothing uses the plugin any more: no -f needed.
		h.must(t, "plugin", "disable", name)
		if rec := localFormat(t, h); rec != `{"version":1,"writer":"felt `+v1+`"}` {
			t.Errorf("%s: local format record %s; want format 1 as felt %s wrote it", h.ns, rec, v1)
		}
		for _, link := range strings.Split(testkit.MustRun(t, "ip", "-n", h.ns, "-o", "-d", "link", "show"), "\n") {
			if f := strings.Fields(link); len(f) > 1 && (strings.HasPrefix(f[1], "felt") || strings.HasPrefix(f[1], "fv") || strings.Contains(link, "alias felt:")) {
				t.Errorf("%s: a link of felt left behind: %s", h.ns, link)
			}
		}
		for _, save := range []string{"iptables-nft-save", "iptables-legacy-save"} {
			if rules, _ := testkit.RunWithin(cmdTimeout, "ip", "netns", "exec", h.ns, save); strings.Contains(strings.ToLower(rules), "felt") {
				t.Errorf("%s: %s shows felt's rules left behind:\n%s", h.ns, save, rules)
			}
		}
		h.must(t, "plugin", "rm", name)
		if ls := h.must(t, "plugin", "ls", "-q"); ls != "" {
			t.Errorf("%s: plugins left: %s", h.ns, ls)
		}
	}
}

// waitReplies waits until the ping in ctr has had n replies.
func waitReplies(t testing.TB, h regHost, ctr string, n int) {
	t.Helper()
	deadline := time.Now().Add(pingTimeout)
	for {
		log, _ := h.docker("exec", ctr, "cat", "/tmp/upgrade-ping.log")
		if len(replySeq.FindAllString(log, -1)) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the ping in %s has not had %d replies:\n%s", h.ns, ctr, n, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var (
	replySeq = regexp.MustCompile(`seq=(\d+) `)
	sentLine = regexp.MustCompile(`(\d+) packets transmitted`)
)

// stopPing interrupts the ping in ctr and returns how many it sent and the
// sequence numbers that got no reply.
func stopPing(t testing.TB, h regHost, ctr string) (int, []int) {
	t.Helper()
	h.must(t, "exec", ctr, "killall", "-INT", "ping")
	deadline := time.Now().Add(pingTimeout)
	for {
		log := h.must(t, "exec", ctr, "cat", "/tmp/upgrade-ping.log")
		if m := sentLine.FindStringSubmatch(log); m != nil {
			sent, _ := strconv.Atoi(m[1])
			got := map[int]bool{}
			for _, r := range replySeq.FindAllStringSubmatch(log, -1) {
				n, _ := strconv.Atoi(r[1])
				got[n] = true
			}
			var lost []int
			for seq := range sent {
				if !got[seq] {
					lost = append(lost, seq)
				}
			}
			return sent, lost
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the ping in %s printed no summary:\n%s", h.ns, ctr, tail(log, 10))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// localFormat reads the local format record from the state directory of
// host h's disabled plugin.
func localFormat(t testing.TB, h regHost) string {
	t.Helper()
	s, err := boltkv.Open(filepath.Join(h.state, "felt.db"))
	if err != nil {
		t.Fatalf("%s: opening the plugin's state: %v", h.ns, err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := s.Get(ctx, "local/format")
	if err != nil {
		t.Fatalf("%s: local format record: %v", h.ns, err)
	}
	return string(p.Value)
}
