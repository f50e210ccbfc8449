package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
)

// The cluster harness (e2e/cluster_test.go): hosts felt-cl-h1..h3, each a
// network namespace with a Docker engine of its own (scripts/engine2.sh) and
// felt in it, on one underlay (a bridge in felt-cl-ul, where Consul
// listens). h1 is this machine's Docker; h2 runs Docker 26 and h3 Docker 29
// when the engines cache has them (scripts/engines.sh; CI must have them),
// else this machine's too. h1's plugin reaches its engine's API through an
// apiProxy (pass-through until paused); the others' through the directory
// of their engine's socket (docker.source).
const (
	clPlugin  = "felt-cl:latest" // a name no other test or user has
	clLabel   = "felt-cl"
	clUL      = "felt-cl-ul" // the underlay namespace (at most 14 characters: engine2.sh)
	clBridge  = "fcl-br"
	clULAddr  = "192.168.94.1"
	clHostIF  = "ul0" // each host's underlay interface (FELT_IFACE)
	clNSStart = "felt-cl-h"

	// clConverge bounds how long a change made on one host takes to show on
	// the others (the issue: "within a few seconds").
	clConverge = 15 * time.Second
	// clSettle bounds convergence after a disruption (a plugin or dockerd
	// restart, Consul back, the API unblocked): the sync loop backs off up
	// to 10 s between attempts and a plugin waits up to 10 s for activation.
	clSettle = 45 * time.Second
	// clJoin bounds how long a host that joins later takes to get every
	// network (the issue: "at start"): the sync loop's first Docker call
	// waits up to 10 s for the plugin's activation.
	clJoin = 20 * time.Second
)

// clHost is one host of the cluster.
type clHost struct {
	name    string // h1
	ns      string // felt-cl-h1
	addr    string // underlay address
	version string // Docker version wanted: "20.10" (this machine's), "26", "29"
	bin     string // ENGINE2_BIN ("" this machine's)
	flags   []string
	e       engine
	log     string // its dockerd log: the plugin's output is there
	sockDir string // docker.source of its plugin
	state   string // state.source of its plugin
}

type clCluster struct {
	hosts     []*clHost // h1, h2, h3
	agent     *consul.Agent
	proxy     *apiProxy // between h1's plugin and h1's engine
	engine2   string
	top       string
	pluginDir string
	imageTar  string
}

func (c *clCluster) h(n int) *clHost { return c.hosts[n-1] }

// clEngineBin is the bin directory of Docker version v ("" for this
// machine's). Without the engines cache, this machine's engine stands in,
// except under CI=true, where `make engines` must have built them.
func clEngineBin(t testing.TB, top, v string) (string, bool) {
	t.Helper()
	out, err := testkit.RunWithin(cmdTimeout, filepath.Join(top, "scripts", "engines.sh"), "dir", v)
	if err != nil {
		if testkit.OnCI() {
			testkit.Unavailable(t, "Docker %s is not in the engines cache (make engines): %s", v, out)
		}
		t.Logf("Docker %s is not in the engines cache (make engines): this machine's engine stands in", v)
		return "", false
	}
	return lastLine(out), true
}

// clSetup builds the cluster; everything goes at cleanup, also on failure
// (and leftovers of an interrupted run go first).
func clSetup(t *testing.T) *clCluster {
	testkit.NeedCommands(t, "dockerd", "containerd", "runc", "nsenter", "unshare", "ip", "bash")
	consul.Binary(t) // skips (fails with CI=true) without bin/consul
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	c := &clCluster{engine2: engine2Script(t), top: top}
	for i := 1; i <= 3; i++ {
		h := &clHost{name: fmt.Sprintf("h%d", i), ns: fmt.Sprintf("%s%d", clNSStart, i), addr: fmt.Sprintf("192.168.94.1%d", i), version: "20.10"}
		c.hosts = append(c.hosts, h)
	}
	// h1 without --live-restore: its restart (the paused-API case) stops and
	// starts containers and plugin, the start-up a deadlock would hit.
	c.h(2).flags = []string{"--live-restore"}
	c.h(3).flags = []string{"--live-restore"}
	for _, x := range []struct {
		h *clHost
		v string
	}{{c.h(2), "26"}, {c.h(3), "29"}} {
		if bin, ok := clEngineBin(t, top, x.v); ok {
			x.h.bin, x.h.version = bin, x.v
		}
	}

	// Directories first: their removal then runs after the engines stopped.
	for _, h := range c.hosts {
		h.state = t.TempDir()
	}
	proxyDir := t.TempDir()
	c.pluginDir = t.TempDir()
	c.imageTar = filepath.Join(t.TempDir(), "busybox.tar")

	clCleanup(c.engine2, 4)
	t.Cleanup(func() { clCleanup(c.engine2, 4) })

	// The underlay and Consul (persistent: it is stopped and started again).
	testkit.MustRun(t, "ip", "netns", "add", clUL)
	testkit.MustRun(t, "ip", "-n", clUL, "link", "set", "lo", "up")
	testkit.MustRun(t, "ip", "-n", clUL, "link", "add", clBridge, "type", "bridge")
	testkit.MustRun(t, "ip", "-n", clUL, "addr", "add", clULAddr+"/24", "dev", clBridge)
	testkit.MustRun(t, "ip", "-n", clUL, "link", "set", clBridge, "up")
	c.agent = consul.Start(t, consul.Options{NetNS: clUL, Bind: clULAddr, Client: clULAddr, Persistent: true})

	if out, err := testkit.RunWithin(cmdTimeout, filepath.Join(top, "scripts", "plugin-rootfs.sh"), c.pluginDir); err != nil {
		t.Fatalf("plugin rootfs: %v\n%s", err, out)
	}
	// TestMain built the image in this machine's engine.
	if out, err := testkit.RunWithin(cmdTimeout, "docker", "save", "-o", c.imageTar, image); err != nil {
		t.Fatalf("docker save %s: %v\n%s", image, err, out)
	}

	// The engines start at once (each mostly waits), then get felt in turn.
	for _, h := range c.hosts {
		clNetns(t, h)
	}
	errs := make(chan error, len(c.hosts))
	for _, h := range c.hosts {
		go func() { errs <- c.startEngine(t, h) }()
	}
	var failed []string
	for range c.hosts {
		if err := <-errs; err != nil {
			failed = append(failed, err.Error())
		}
	}
	for _, h := range c.hosts {
		t.Cleanup(func() { // runs before the engines stop (clCleanup)
			if t.Failed() {
				clDiagnostics(t, h)
			}
		})
	}
	if len(failed) > 0 {
		t.Fatal(strings.Join(failed, "\n"))
	}
	c.h(1).sockDir = proxyDir
	c.proxy = startAPIProxy(t, proxyDir, filepath.Join(c.h(1).engineDir(), "docker.sock"))
	for _, h := range c.hosts {
		c.installFelt(t, h)
	}
	return c
}

func (h *clHost) engineDir() string { return "/tmp/felt-engine-" + h.ns }

// clNetns makes h's namespace and its link to the underlay bridge.
func clNetns(t testing.TB, h *clHost) {
	t.Helper()
	testkit.MustRun(t, "ip", "netns", "add", h.ns)
	testkit.MustRun(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
	peer := "fcl-" + h.name
	testkit.MustRun(t, "ip", "-n", clUL, "link", "add", peer, "type", "veth", "peer", "name", clHostIF, "netns", h.ns)
	testkit.MustRun(t, "ip", "-n", clUL, "link", "set", peer, "master", clBridge, "up")
	testkit.MustRun(t, "ip", "-n", h.ns, "addr", "add", h.addr+"/24", "dev", clHostIF)
	testkit.MustRun(t, "ip", "-n", h.ns, "link", "set", clHostIF, "up")
	testkit.MustRun(t, "ip", "-n", h.ns, "route", "add", "default", "via", clULAddr)
}

// startEngine starts h's dockerd. It runs in a goroutine: t only logs.
func (c *clCluster) startEngine(t testing.TB, h *clHost) error {
	start := time.Now()
	cmd := exec.Command(c.engine2, append([]string{"start", h.ns}, h.flags...)...)
	cmd.Env = append(os.Environ(), "ENGINE2_BIN="+h.bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: starting Docker %s in %s: %v\n%s", h.name, h.version, h.ns, err, out)
	}
	h.e = engine{name: h.name + " (Docker " + h.version + ")", host: lastLine(string(out))}
	h.log = filepath.Join(h.engineDir(), "dockerd.log")
	if h.sockDir == "" {
		h.sockDir = h.engineDir() // where its docker.sock is
	}
	ver, err := h.e.docker("version", "-f", "{{.Server.Version}} API {{.Server.APIVersion}}")
	if err != nil {
		return fmt.Errorf("%s: docker version: %v\n%s", h.name, err, ver)
	}
	if h.version != "20.10" && !strings.HasPrefix(ver, h.version+".") {
		return fmt.Errorf("%s: the engine reports %s, want Docker %s", h.name, ver, h.version)
	}
	t.Logf("%s: Docker %s in %s, ready in %s", h.name, ver, h.ns, time.Since(start).Round(time.Millisecond))
	return nil
}

// installFelt loads the image and installs and enables felt in h's engine,
// its Docker API mount pointing at h.sockDir.
func (c *clCluster) installFelt(t testing.TB, h *clHost) {
	t.Helper()
	h.e.must(t, "load", "-q", "-i", c.imageTar)
	h.e.must(t, "plugin", "create", clPlugin, c.pluginDir)
	h.e.must(t, "plugin", "set", clPlugin, "state.source="+h.state, "docker.source="+h.sockDir,
		"CONSUL_HTTP_ADDR="+c.agent.Addr, "FELT_IFACE="+clHostIF, "FELT_LOG_LEVEL=debug")
	h.e.must(t, "plugin", "enable", clPlugin)
}

// addHost starts one more host (this machine's Docker) with felt, stopped
// at the end of t.
func (c *clCluster) addHost(t *testing.T, n int) *clHost {
	t.Helper()
	h := &clHost{name: fmt.Sprintf("h%d", n), ns: fmt.Sprintf("%s%d", clNSStart, n), addr: fmt.Sprintf("192.168.94.1%d", n),
		version: "20.10", flags: []string{"--live-restore"}, state: t.TempDir()}
	t.Cleanup(func() { clStopHost(c.engine2, h.ns) })
	clNetns(t, h)
	if err := c.startEngine(t, h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			clDiagnostics(t, h)
		}
	})
	c.installFelt(t, h)
	return h
}

// clCleanup stops the engines of hosts 1..n (containers, networks and
// plugins go with them), and removes their namespaces and the underlay's.
func clCleanup(engine2 string, n int) {
	for i := 1; i <= n; i++ {
		clStopHost(engine2, fmt.Sprintf("%s%d", clNSStart, i))
	}
	if _, err := os.Stat(filepath.Join("/run/netns", clUL)); err == nil {
		_, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", clUL)
	}
}

func clStopHost(engine2, ns string) {
	_, _ = testkit.RunWithin(cmdTimeout, engine2, "stop", ns)
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		_, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", ns)
	}
}

// restart restarts h's dockerd with flags (engine2.sh restart).
func (c *clCluster) restart(t testing.TB, h *clHost, flags ...string) {
	t.Helper()
	start := time.Now()
	out, err := testkit.RunWithin(cmdTimeout, append([]string{c.engine2, "restart", h.ns}, flags...)...)
	if err != nil {
		t.Fatalf("%s: restarting dockerd %v: %v\n%s", h.name, flags, err, out)
	}
	t.Logf("%s: dockerd restarted %v in %s", h.name, flags, time.Since(start).Round(time.Millisecond))
}

// clNet is a network as docker network inspect shows it.
type clNet struct {
	ID, Name, Driver     string
	Internal, Attachable bool
	Labels, Options      map[string]string
	IPAM                 struct {
		Driver  string
		Options map[string]string
		Config  []struct{ Subnet, IPRange, Gateway string }
	}
	Containers map[string]struct{ Name, IPv4Address string }
}

// spec is what a declaration carries, to compare networks across hosts
// (pool and range aside: see sameSpec).
func (n clNet) spec() string {
	return fmt.Sprintf("driver=%s ipam=%s internal=%v attachable=%v labels=%v options=%v ipam-options=%v",
		n.Driver, n.IPAM.Driver, n.Internal, n.Attachable, norm(n.Labels), norm(n.Options), norm(n.IPAM.Options))
}

func norm(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func (n clNet) subnet() string {
	if len(n.IPAM.Config) == 0 {
		return ""
	}
	return n.IPAM.Config[0].Subnet
}

func (n clNet) ipRange() string {
	if len(n.IPAM.Config) == 0 {
		return ""
	}
	return n.IPAM.Config[0].IPRange
}

// inPool: the subnet Docker shows is the pool, or (Docker 29 shows what
// felt's RequestPool answered) this host's lease of it.
func (n clNet) inPool(pool string) bool {
	p := netip.MustParsePrefix(pool)
	s, err := netip.ParsePrefix(n.subnet())
	return err == nil && (s == p || (s.Bits() >= p.Bits() && p.Contains(s.Addr())))
}

// nets lists h's networks of driver felt by name (several, if Docker made
// duplicates).
func (h *clHost) nets(t testing.TB) map[string][]string {
	t.Helper()
	out := h.e.must(t, "network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}} {{.Driver}}")
	m := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == clPlugin {
			m[f[1]] = append(m[f[1]], f[0])
		}
	}
	return m
}

// inspect returns h's network id (or name), false if there is none.
func (h *clHost) inspect(t testing.TB, id string) (clNet, bool) {
	t.Helper()
	out, err := h.e.docker("network", "inspect", id)
	if err != nil {
		if strings.Contains(strings.ToLower(out), "no such network") || strings.Contains(out, "not found") {
			return clNet{}, false
		}
		t.Fatalf("%s: docker network inspect %s: %v\n%s", h.name, id, err, out)
	}
	var ns []clNet
	if err := json.Unmarshal([]byte(out), &ns); err != nil || len(ns) != 1 {
		t.Fatalf("%s: docker network inspect %s: %v\n%s", h.name, id, err, out)
	}
	return ns[0], true
}

// one returns h's only felt network called name, false if it has none; two
// or more fail t (duplicates are what cluster networks must never make).
func (h *clHost) one(t testing.TB, name string) (clNet, bool) {
	t.Helper()
	ids := h.nets(t)[name]
	switch len(ids) {
	case 0:
		return clNet{}, false
	case 1:
		return h.inspect(t, ids[0])
	}
	t.Fatalf("%s: %d felt networks called %s: %v", h.name, len(ids), name, ids)
	return clNet{}, false
}

// create makes a felt network on h.
func (h *clHost) create(t testing.TB, name, pool string, flags ...string) clNet {
	t.Helper()
	args := append([]string{"network", "create", "-d", clPlugin, "--ipam-driver", clPlugin, "--label", clLabel, "--subnet", pool}, flags...)
	h.e.must(t, append(args, name)...)
	n, ok := h.one(t, name)
	if !ok {
		t.Fatalf("%s: network %s not there after docker network create", h.name, name)
	}
	return n
}

// run starts a container that restarts with the engine and stops at once.
func (h *clHost) run(t testing.TB, name, net string) netip.Addr {
	t.Helper()
	h.e.must(t, "run", "-d", "--name", name, "--label", clLabel, "--network", net, "--restart=always", "--stop-timeout=1", image, "sleep", "1d")
	s := h.e.must(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, net), name)
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("%s: container %s on %s has address %q", h.name, name, net, s)
	}
	return a
}

// waitNet waits up to limit until every host has exactly one felt network
// called name, with want's spec and pool; it returns them.
func waitNet(t testing.TB, limit time.Duration, want clNet, pool string, hosts ...*clHost) map[*clHost]clNet {
	t.Helper()
	start := time.Now()
	got := map[*clHost]clNet{}
	for {
		var missing []string
		for _, h := range hosts {
			if _, ok := got[h]; ok {
				continue
			}
			n, ok := h.one(t, want.Name)
			if !ok {
				missing = append(missing, h.name+": none")
				continue
			}
			if n.spec() != want.spec() || !n.inPool(pool) || n.ipRange() != want.ipRange() {
				missing = append(missing, fmt.Sprintf("%s: subnet %s range %q %s", h.name, n.subnet(), n.ipRange(), n.spec()))
				continue
			}
			got[h] = n
		}
		if len(missing) == 0 {
			t.Logf("network %s on %s within %s", want.Name, hostNames(hosts), time.Since(start).Round(100*time.Millisecond))
			return got
		}
		if time.Since(start) > limit {
			t.Fatalf("network %s (pool %s, range %q, %s) not on every host within %s:\n%s", want.Name, pool, want.ipRange(), want.spec(), limit, strings.Join(missing, "\n"))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// waitGone waits up to limit until no host has a felt network called name.
func waitGone(t testing.TB, limit time.Duration, name string, hosts ...*clHost) {
	t.Helper()
	start := time.Now()
	for {
		var left []string
		for _, h := range hosts {
			if ids := h.nets(t)[name]; len(ids) > 0 {
				left = append(left, fmt.Sprintf("%s: %v", h.name, ids))
			}
		}
		if len(left) == 0 {
			t.Logf("network %s gone from %s within %s", name, hostNames(hosts), time.Since(start).Round(100*time.Millisecond))
			return
		}
		if time.Since(start) > limit {
			t.Fatalf("network %s still there after %s: %s", name, limit, strings.Join(left, "; "))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func hostNames(hosts []*clHost) string {
	var s []string
	for _, h := range hosts {
		s = append(s, h.name)
	}
	return strings.Join(s, ",")
}

// logSize is the current length of h's dockerd log: later lines are new.
func (h *clHost) logSize(t testing.TB) int64 {
	t.Helper()
	fi, err := os.Stat(h.log)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// pluginLines are the plugin's lines of h's dockerd log after offset since
// that contain every one of words (case-insensitively; "a|b": a or b) and
// none of not.
func (h *clHost) pluginLines(t testing.TB, since int64, words, not []string) []string {
	t.Helper()
	f, err := os.Open(h.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() < since {
		since = 0
	}
	if _, err := f.Seek(since, 0); err != nil {
		t.Fatal(err)
	}
	var found []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
lines:
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, "plugin=") {
			continue
		}
		low := strings.ToLower(l)
	words:
		for _, w := range words {
			for _, alt := range strings.Split(w, "|") {
				if strings.Contains(low, strings.ToLower(alt)) {
					continue words
				}
			}
			continue lines
		}
		for _, w := range not {
			if strings.Contains(low, strings.ToLower(w)) {
				continue lines
			}
		}
		found = append(found, l)
	}
	return found
}

// waitLog waits up to limit for a plugin line of h's log after since with
// every one of words ("cluster" and the network's name among them) and
// none of not; it returns the line.
func (h *clHost) waitLog(t testing.TB, limit time.Duration, since int64, words, not []string) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if ls := h.pluginLines(t, since, words, not); len(ls) > 0 {
			t.Logf("%s logged: %s", h.name, ls[0])
			return ls[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no plugin log line with %q (and none of %q) within %s; its cluster lines:\n%s", h.name, words, not, limit,
				strings.Join(lastN(h.pluginLines(t, since, []string{"cluster"}, nil), 20), "\n"))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func lastN(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// createdSince counts the network create events of name on h's engine
// from since until now (dockerd keeps its last 256 events in memory, and
// none across its restarts: use short windows without restarts).
func (h *clHost) createdSince(t testing.TB, since time.Time, name string) int {
	t.Helper()
	unix := func(x time.Time) string { return fmt.Sprintf("%d.%09d", x.Unix(), x.Nanosecond()) }
	out := h.e.must(t, "events", "--since", unix(since), "--until", unix(time.Now()),
		"--filter", "type=network", "--filter", "event=create", "--format", "{{.Actor.Attributes.name}}")
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == name {
			n++
		}
	}
	return n
}

// notRecreated fails t if any of hosts created name again since since:
// a removal must not flap (the network back for a moment, on any host).
func notRecreated(t testing.TB, since time.Time, name string, hosts ...*clHost) {
	t.Helper()
	for _, h := range hosts {
		if n := h.createdSince(t, since, name); n > 0 {
			t.Errorf("%s: network %s created %d time(s) again after its removal (docker events): the removal flapped", h.name, name, n)
		}
	}
}

// pluginPID is the felt process of h's plugin (0 if none).
func (h *clHost) pluginPID(t testing.TB) int {
	t.Helper()
	return feltPID(h.e.must(t, "plugin", "inspect", "-f", "{{.Id}}", clPlugin))
}

// pingFromPlugin asks /_ping of the Docker API at the plugin's
// /run/felt-docker/docker.sock, as the plugin sees it (through
// /proc/PID/root: its mounts), and returns the mount's line of its
// mountinfo.
func (h *clHost) pingFromPlugin(t testing.TB) string {
	t.Helper()
	pid := h.pluginPID(t)
	if pid == 0 {
		t.Fatalf("%s: plugin process not found", h.name)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	var mount string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "/run/felt-docker" {
			mount = l
		}
	}
	if mount == "" {
		t.Fatalf("%s: the plugin has no mount at /run/felt-docker (config.json's docker mount):\n%s", h.name, b)
	}
	conn, err := net.DialTimeout("unix", fmt.Sprintf("/proc/%d/root/run/felt-docker/docker.sock", pid), 10*time.Second)
	if err != nil {
		t.Fatalf("%s: connecting to docker.sock in the plugin's mount (%s): %v", h.name, mount, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, _ := bufio.NewReader(conn).ReadString(0)
	if !strings.HasPrefix(resp, "HTTP/1.0 200") && !strings.HasPrefix(resp, "HTTP/1.1 200") || !strings.HasSuffix(resp, "OK") {
		t.Fatalf("%s: /_ping through the plugin's mount answered:\n%s", h.name, resp)
	}
	return mount
}

// strayBridges lists the felt bridges (felt-<10 characters of a network
// ID>) in h's namespace that belong to no felt network of its engine.
func (h *clHost) strayBridges(t testing.TB) []string {
	t.Helper()
	want := map[string]bool{}
	for _, ids := range h.nets(t) {
		for _, id := range ids {
			want["felt-"+id[:10]] = true
		}
	}
	out := testkit.MustRun(t, "ip", "-n", h.ns, "-o", "link", "show", "type", "bridge")
	var stray []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
		if strings.HasPrefix(name, "felt-") && !want[name] {
			stray = append(stray, name)
		}
	}
	return stray
}

// noDuplicates fails t if any host has two felt networks of one name.
func noDuplicates(t testing.TB, hosts ...*clHost) {
	t.Helper()
	for _, h := range hosts {
		for name, ids := range h.nets(t) {
			if len(ids) > 1 {
				t.Errorf("%s: %d felt networks called %s: %v", h.name, len(ids), name, ids)
			}
		}
		// Polled: Docker stops listing a network as soon as its removal
		// starts, before felt's DeleteNetwork has removed the bridge
		// (a removal the last case set off may still be under way).
		var stray []string
		deadline := time.Now().Add(clConverge)
		for {
			if stray = h.strayBridges(t); len(stray) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if len(stray) > 0 {
			t.Errorf("%s: felt bridges of no network for %s: %v", h.name, clConverge, stray)
		}
	}
}

// clDiagnostics logs h's felt networks, the plugin's cluster lines,
// warnings and errors, and keeps its whole dockerd log (engine2.sh stop
// removes it).
func clDiagnostics(t testing.TB, h *clHost) {
	if h.e.host == "" {
		return
	}
	out, _ := h.e.docker("network", "ls")
	t.Logf("%s: docker network ls:\n%s", h.name, out)
	out, _ = h.e.docker("ps", "-a")
	t.Logf("%s: docker ps -a:\n%s", h.name, out)
	b, _ := os.ReadFile(h.log)
	keepAll := filepath.Join(os.TempDir(), "felt-cluster-"+h.ns+"-dockerd.log")
	if err := os.WriteFile(keepAll, b, 0o644); err == nil {
		t.Logf("%s: its whole dockerd log is kept in %s", h.name, keepAll)
	}
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		// dockerd logs each line of the plugin's output whole (at its own
		// level=error on some versions): felt's level is inside.
		if strings.HasPrefix(l, "engine2:") || (strings.Contains(l, "plugin=") && (strings.Contains(strings.ToLower(l), "cluster") ||
			strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR"))) {
			keep = append(keep, l)
		}
	}
	t.Logf("%s: dockerd log (%s), the plugin's cluster lines, warnings, errors:\n%s", h.name, h.log, strings.Join(lastN(keep, 60), "\n"))
}

// sortedNames are the keys of m, sorted.
func sortedNames(m map[string][]string) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}
