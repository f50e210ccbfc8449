package e2e

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
)

// TestCluster: cluster networks (issue 10) on three hosts, each with its
// own Docker engine and felt, one Consul (cluster_harness_test.go). A
// network created on one host appears on every host, with the same name,
// driver, labels, options, --internal and --ip-range, and carries traffic
// between them; removed on one host it goes from every host, except where
// containers still use it, until they are gone; conflicts are left alone
// and logged; -o scope=local keeps a network to its host; no plugin handler
// calls the Docker API (the API blocked, the engine still works); a host
// that joins later gets every network; plugin and dockerd restarts and a
// Consul outage converge without duplicates.
//
// One cluster serves every case; each case makes its own networks (pools
// 10.80-10.93), so one can run alone: go test -run 'TestCluster/conflicts' ./e2e/
// Log lines are matched loosely: the plugin's lines of the engine's dockerd
// log holding "cluster", the network's name and kept/removed/conflict.
func TestCluster(t *testing.T) {
	c := clSetup(t)
	h1, h2, h3 := c.h(1), c.h(2), c.h(3)
	t.Logf("hosts: %s", strings.Join([]string{h1.e.name, h2.e.name, h3.e.name}, ", "))

	t.Run("docker socket in the plugin", func(t *testing.T) { clSocket(t, c) })
	t.Run("created on one host, there on all", func(t *testing.T) { clCreated(t, c) })
	t.Run("removed on one host, kept where used", func(t *testing.T) { clRemoved(t, c) })
	t.Run("conflicts left alone and reported", func(t *testing.T) { clConflicts(t, c) })
	t.Run("scope=local stays on its host", func(t *testing.T) { clLocal(t, c) })
	t.Run("no Docker API call from a handler", func(t *testing.T) { clAPIBlocked(t, c) })
	t.Run("a host added later gets every network", func(t *testing.T) { clLateHost(t, c) })
	t.Run("restarts during create and remove", func(t *testing.T) { clRestarts(t, c) })
	t.Run("Consul down during a remove", func(t *testing.T) { clConsulDown(t, c) })
	t.Run("one network per name, no stray bridges", func(t *testing.T) { noDuplicates(t, c.hosts...) })
}

// clSocket: config.json's docker mount gives each plugin its engine's API,
// read-only (the directory: dockerd makes its socket anew at each start)
// yet connect() works (the kernel checks read-only mounts for files,
// directories and links, not for connecting to a socket). Independent of
// the sync loop: it checks the mount alone.
func clSocket(t *testing.T, c *clCluster) {
	before := c.proxy.Requests()
	for _, h := range c.hosts {
		mount := h.pingFromPlugin(t)
		if opts := strings.Fields(mount)[5]; !slices.Contains(strings.Split(opts, ","), "ro") {
			t.Errorf("%s: the plugin's /run/felt-docker is mounted %s, want ro: %s", h.name, opts, mount)
		}
		t.Logf("%s: /_ping through the plugin's /run/felt-docker/docker.sock: OK (%s)", h.name, mount)
	}
	if c.proxy.Requests() == before {
		t.Errorf("h1's plugin reached its engine without the API proxy (docker.source=%s)", c.h(1).sockDir)
	}
}

// clCreated: case 1.
func clCreated(t *testing.T, c *clCluster) {
	const name, pool, rng = "cl-blue", "10.80.0.0/16", "10.80.128.0/17"
	n := c.h(1).create(t, name, pool, "--label", "colour=blue", "-o", "vni=4091", "--internal", "--ip-range", rng)
	if !n.Internal || n.Labels["colour"] != "blue" || n.Options["vni"] != "4091" || n.ipRange() != rng {
		t.Fatalf("h1: docker network create gave %+v", n)
	}
	waitNet(t, clConverge, n, pool, c.h(2), c.h(3))

	ips := map[*clHost]netip.Addr{}
	for _, h := range c.hosts {
		ips[h] = h.run(t, name+"-"+h.name, name)
		if !netip.MustParsePrefix(rng).Contains(ips[h]) {
			t.Errorf("%s: container address %s outside --ip-range %s", h.name, ips[h], rng)
		}
	}
	for _, h := range c.hosts {
		for _, o := range c.hosts {
			if o != h {
				pingUntil(t, h.e, name+"-"+h.name, ips[o].String())
			}
		}
	}
}

// clRemoved: case 2.
func clRemoved(t *testing.T, c *clCluster) {
	const name, pool = "cl-rm", "10.81.0.0/16"
	h1, h2, h3 := c.h(1), c.h(2), c.h(3)
	n := h1.create(t, name, pool)
	waitNet(t, clConverge, n, pool, h2, h3)
	h3.run(t, name+"-h3", name)

	since := h3.logSize(t)
	removed := time.Now()
	h2.e.must(t, "network", "rm", name)
	waitGone(t, clConverge, name, h1, h2)
	h3.waitLog(t, clConverge, since, []string{"cluster", name, "kept"}, nil)
	if _, ok := h3.one(t, name); !ok {
		t.Fatalf("h3: %s removed while its container uses it", name)
	}
	if state := h3.e.must(t, "inspect", "-f", "{{.State.Running}}", name+"-h3"); state != "true" {
		t.Fatalf("h3: the container on %s no longer runs (running=%s): nothing may be force-disconnected", name, state)
	}

	since = h3.logSize(t)
	h3.e.must(t, "rm", "-f", name+"-h3")
	waitGone(t, clConverge, name, h3)
	h3.waitLog(t, clConverge, since, []string{"cluster", name, "removed"}, []string{"kept"})
	notRecreated(t, removed, name, h1, h2, h3)
}

// clConflicts: case 4. h3 has its own cl-red (scope=local, another pool)
// and a Docker bridge network on the pool of h1's cl-over, made before h1
// creates both: h3 keeps what it has, creates neither, and names both
// conflicts in its log; h2 gets both.
func clConflicts(t *testing.T, c *clCluster) {
	h1, h2, h3 := c.h(1), c.h(2), c.h(3)
	own := h3.create(t, "cl-red", "10.83.0.0/16", "-o", "scope=local")
	h3.e.must(t, "network", "create", "-d", "bridge", "--label", clLabel, "--subnet", "10.84.0.0/16", "cl-plain")
	plain, _ := h3.inspect(t, "cl-plain")

	since := h3.logSize(t)
	red := h1.create(t, "cl-red", "10.82.0.0/16")
	over := h1.create(t, "cl-over", "10.84.0.0/16")
	waitNet(t, clConverge, red, "10.82.0.0/16", h2)
	waitNet(t, clConverge, over, "10.84.0.0/16", h2)
	h3.waitLog(t, clConverge, since, []string{"cluster", "cl-red", "conflict"}, nil)
	// Not created here, with the create's error (felt's RequestPool refuses
	// a pool on which the host has an interface).
	h3.waitLog(t, clConverge, since, []string{"cluster", "cl-over", "conflict|not created", "overlaps"}, nil)
	t.Logf("h3: %d refused RequestPool calls for cl-over's pool so far (the create retried)",
		len(h3.pluginLines(t, since, []string{"request failed", "RequestPool", "--subnet 10.84.0.0/16"}, nil)))

	if n, ok := h3.one(t, "cl-red"); !ok || n.ID != own.ID || !n.inPool("10.83.0.0/16") || n.spec() != own.spec() {
		t.Errorf("h3: its own cl-red (%s, pool 10.83.0.0/16, %s) is now %v %s subnet %s %s", own.ID[:12], own.spec(), ok, n.ID, n.subnet(), n.spec())
	}
	if ids := h3.nets(t)["cl-over"]; len(ids) > 0 {
		t.Errorf("h3: cl-over created on the pool of its bridge network cl-plain: %v", ids)
	}
	if n, ok := h3.inspect(t, "cl-plain"); !ok || n.ID != plain.ID || n.subnet() != "10.84.0.0/16" {
		t.Errorf("h3: its bridge network cl-plain (%s) is now %v %s %s", plain.ID[:12], ok, n.ID, n.subnet())
	}
	if n, ok := h1.one(t, "cl-red"); !ok || n.ID != red.ID {
		t.Errorf("h1: its cl-red (%s) is now %v %s", red.ID[:12], ok, n.ID)
	}

	// Level-triggered: once h3's own networks are gone, h3 gets the
	// declared ones; removing h3's own (never declared) cl-red withdraws
	// nothing.
	t.Run("cleared when its cause goes", func(t *testing.T) {
		h3.e.must(t, "network", "rm", "cl-red", "cl-plain")
		waitNet(t, clSettle, red, "10.82.0.0/16", h3)
		waitNet(t, clSettle, over, "10.84.0.0/16", h3)
		for _, h := range []*clHost{h1, h2} {
			if _, ok := h.one(t, "cl-red"); !ok {
				t.Errorf("%s: cl-red gone after h3 removed its own, undeclared cl-red", h.name)
			}
		}
		if n, ok := h1.one(t, "cl-red"); ok && n.ID != red.ID {
			t.Errorf("h1: its cl-red (%s) was replaced by %s", red.ID[:12], n.ID[:12])
		}
	})
}

// clLocal: case 5. A cluster network created after the local one reaching
// h2 and h3 shows that their sync passed over it.
func clLocal(t *testing.T, c *clCluster) {
	h1, h2, h3 := c.h(1), c.h(2), c.h(3)
	h1.create(t, "cl-local", "10.85.0.0/16", "-o", "scope=local")
	after := h1.create(t, "cl-after", "10.86.0.0/16")
	waitNet(t, clConverge, after, "10.86.0.0/16", h2, h3)
	for _, h := range []*clHost{h2, h3} {
		if ids := h.nets(t)["cl-local"]; len(ids) > 0 {
			t.Errorf("%s: h1's -o scope=local network cl-local is here: %v", h.name, ids)
		}
	}
	if _, ok := h1.one(t, "cl-local"); !ok {
		t.Errorf("h1: cl-local is gone")
	}
}

// clAPIBlocked: case 8. h1's plugin reaches its engine's API only through
// the proxy. Paused, the proxy holds every request; through the engine's
// real socket, network create and rm, docker run and network connect must
// still finish at once, and a dockerd restart (containers and plugin stop
// and start: h1 runs without --live-restore) must bring a --restart=always
// container on a felt network back. A handler waiting on the Docker API
// would hang each of them. The proxy must have held requests (the sync
// loop was trying); after Resume the networks reach h2 and h3.
func clAPIBlocked(t *testing.T, c *clCluster) {
	const quick = 10 * time.Second
	h1, h2, h3 := c.h(1), c.h(2), c.h(3)
	p := c.proxy
	p.Pause()
	t.Cleanup(p.Resume)
	timed := func(args ...string) {
		t.Helper()
		start := time.Now()
		out, err := testkit.RunWithin(3*quick, append([]string{"docker", "-H", h1.e.host}, args...)...)
		d := time.Since(start)
		if err != nil {
			t.Fatalf("h1 with its plugin's Docker API blocked: docker %s: %v after %s\n%s", strings.Join(args, " "), err, d.Round(time.Millisecond), out)
		}
		if d > quick {
			t.Errorf("h1 with its plugin's Docker API blocked: docker %s took %s (a handler waiting on the API?)", strings.Join(args, " "), d.Round(time.Millisecond))
		} else {
			t.Logf("h1, API blocked: docker %s %s: %s", args[0], args[1], d.Round(time.Millisecond))
		}
	}
	felt := []string{"network", "create", "-d", clPlugin, "--ipam-driver", clPlugin, "--label", clLabel}
	timed(append(felt, "--subnet", "10.87.0.0/16", "cl-paused")...)
	timed("run", "-d", "--name", "cl-paused-c", "--label", clLabel, "--network", "cl-paused", "--restart=always", "--stop-timeout=1", image, "sleep", "1d")
	timed(append(felt, "--subnet", "10.88.0.0/16", "cl-paused2")...)
	timed("network", "connect", "cl-paused2", "cl-paused-c")
	timed(append(felt, "--subnet", "10.89.0.0/16", "cl-paused-rm")...)
	timed("network", "rm", "cl-paused-rm")

	c.restart(t, h1, h1.flags...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := h1.e.docker("inspect", "-f", "{{.State.Running}}", "cl-paused-c")
		if err == nil && out == "true" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h1, its plugin's Docker API blocked: the --restart=always container on cl-paused not running 30 s after dockerd's restart: %v %s", err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	held := p.Held()
	if held == 0 {
		t.Errorf("h1's plugin made no Docker API request while it was blocked: the sync loop was not trying")
	}
	t.Logf("h1's plugin: %d Docker API requests held while blocked", held)

	paused, _ := h1.one(t, "cl-paused")
	paused2, _ := h1.one(t, "cl-paused2")
	p.Resume()
	waitNet(t, clSettle, paused, "10.87.0.0/16", h2, h3)
	waitNet(t, clSettle, paused2, "10.88.0.0/16", h2, h3)
	for _, h := range []*clHost{h2, h3} {
		if ids := h.nets(t)["cl-paused-rm"]; len(ids) > 0 {
			t.Errorf("%s: cl-paused-rm, created and removed on h1 while its API was blocked, is here: %v", h.name, ids)
		}
	}
}

// clLateHost: case 3. h4 starts after the networks were declared and gets
// every one h2 has (h2 has only cluster networks), with the same spec;
// its container reaches h1's.
func clLateHost(t *testing.T, c *clCluster) {
	const name, pool = "cl-late", "10.93.0.0/16"
	h1, h2 := c.h(1), c.h(2)
	n := h1.create(t, name, pool)
	ip1 := h1.run(t, name+"-h1", name)
	waitNet(t, clConverge, n, pool, h2)
	want := sortedNames(h2.nets(t))

	h4 := c.addHost(t, 4)
	start := time.Now()
	for {
		got := sortedNames(h4.nets(t))
		if slices.Equal(got, want) {
			t.Logf("h4: every network within %s of felt's start: %v", time.Since(start).Round(100*time.Millisecond), got)
			break
		}
		if time.Since(start) > clJoin {
			t.Fatalf("h4, started later: felt networks %v %s after felt's start, want h2's %v", got, clJoin, want)
		}
		time.Sleep(300 * time.Millisecond)
	}
	for _, name := range want {
		n2, _ := h2.one(t, name)
		n4, _ := h4.one(t, name)
		if n4.spec() != n2.spec() || n4.ipRange() != n2.ipRange() {
			t.Errorf("h4: %s has range %q %s; h2's has %q %s", name, n4.ipRange(), n4.spec(), n2.ipRange(), n2.spec())
		}
	}
	ip4 := h4.run(t, name+"-h4", name)
	pingUntil(t, h4.e, name+"-h4", ip1.String())
	pingUntil(t, h1.e, name+"-h1", ip4.String())
}

// clRestarts: case 6. A create while h2's plugin is disabled and h3's
// dockerd restarts (--live-restore), a remove while h3's plugin is
// disabled and h2's dockerd restarts without --live-restore (containers
// and plugin stop and start): every host converges, one network per name.
func clRestarts(t *testing.T, c *clCluster) {
	const name, pool = "cl-pd", "10.90.0.0/16"
	h1, h2, h3 := c.h(1), c.h(2), c.h(3)

	h2.e.must(t, "plugin", "disable", "-f", clPlugin)
	n := h1.create(t, name, pool)
	c.restart(t, h3, h3.flags...)
	waitNet(t, clSettle, n, pool, h3)
	h2.e.must(t, "plugin", "enable", clPlugin)
	waitNet(t, clSettle, n, pool, h2)

	h3.e.must(t, "plugin", "disable", "-f", clPlugin)
	removed := time.Now()
	h1.e.must(t, "network", "rm", name)
	c.restart(t, h2)
	waitGone(t, clSettle, name, h1, h2)
	h3.e.must(t, "plugin", "enable", clPlugin)
	waitGone(t, clSettle, name, h3)
	notRecreated(t, removed, name, h1, h3) // h2's dockerd restarted: its events are gone

	// Afterwards, as usual.
	const name2, pool2 = "cl-after-restarts", "10.91.0.0/16"
	n2 := h2.create(t, name2, pool2)
	waitNet(t, clConverge, n2, pool2, h1, h3)
	noDuplicates(t, c.hosts...)
}

// clConsulDown: case 7. With Consul stopped, docker network rm on h1
// works; when Consul is back, the removal reaches h2 and h3, and h1 does
// not bring the network back.
func clConsulDown(t *testing.T, c *clCluster) {
	const name, pool = "cl-co", "10.92.0.0/16"
	h1, h2, h3 := c.h(1), c.h(2), c.h(3)
	n := h1.create(t, name, pool)
	waitNet(t, clConverge, n, pool, h2, h3)

	c.agent.Stop()
	up := false
	t.Cleanup(func() {
		if !up {
			c.agent.Restart()
		}
	})
	start := time.Now()
	h1.e.must(t, "network", "rm", name)
	t.Logf("h1: docker network rm with Consul down took %s", time.Since(start).Round(time.Millisecond))
	c.agent.Restart()
	up = true
	waitGone(t, clSettle, name, h1, h2, h3)
	notRecreated(t, start, name, h1, h2, h3)
}
