package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
)

// A registry lab is what a user of felt's releases has: hosts with Docker,
// one underlay, Consul and a registry on it. All of it lives in network
// namespaces this test makes: an underlay namespace holding a bridge, the
// registry (the CNCF distribution registry, bin/registry, built from Go
// module sources by tools/registry) and Consul, and one namespace per host,
// each running a Docker engine of its own (scripts/engine2.sh) that trusts
// the registry over plain HTTP (--insecure-registry). Nothing of it is in
// the root namespace or this machine's engine.
type regLab struct {
	t        *testing.T
	name     string // prefix of the namespaces, at most 9 characters
	engine2  string // scripts/engine2.sh
	top      string // the module root
	ul       string // the underlay namespace
	gw       netip.Addr
	Registry string // host:port
	Consul   *consul.Agent
	Hosts    []regHost
}

// regHost is one host of the lab: its namespace, underlay address, engine
// and the plugin's state directory on it.
type regHost struct {
	engine
	ns    string
	ip    netip.Addr
	state string
}

// regLabAvailable skips (fails with CI=true) without what a lab needs.
func regLabAvailable(t *testing.T) {
	t.Helper()
	testkit.NeedCommands(t, "dockerd", "containerd", "runc", "nsenter", "unshare", "ip", "bash", "make")
	consul.Binary(t)
	if _, err := os.Stat(registryBinary(t)); err != nil {
		testkit.Unavailable(t, "%s not found: run `make registry` to build the pinned registry", registryBinary(t))
	}
}

func moduleTop(t testing.TB) string {
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func registryBinary(t testing.TB) string { return filepath.Join(moduleTop(t), "bin", "registry") }

// newRegLab builds a lab: namespaces <name>-ul and <name>-h1…, the underlay
// 192.168.<subnet>.0/24 (.1 on the bridge, where the registry listens on
// port 5000 and Consul on a free port; host i at .10+i). Everything goes at
// cleanup, also when the test fails, and leftovers of an interrupted run of
// the same lab are removed first.
func newRegLab(t *testing.T, name string, subnet, hosts int) *regLab {
	t.Helper()
	top := moduleTop(t)
	l := &regLab{t: t, name: name, engine2: filepath.Join(top, "scripts", "engine2.sh"), top: top, ul: name + "-ul",
		gw: netip.AddrFrom4([4]byte{192, 168, byte(subnet), 1})}
	l.Registry = net.JoinHostPort(l.gw.String(), "5000")
	l.removeLeftovers(hosts)
	t.Cleanup(func() { l.removeLeftovers(hosts) }) // registered first: runs last, a safety net

	testkit.MustRun(t, "ip", "netns", "add", l.ul)
	testkit.MustRun(t, "ip", "-n", l.ul, "link", "set", "lo", "up")
	testkit.MustRun(t, "ip", "-n", l.ul, "link", "add", "br0", "type", "bridge")
	testkit.MustRun(t, "ip", "-n", l.ul, "addr", "add", l.gw.String()+"/24", "dev", "br0")
	testkit.MustRun(t, "ip", "-n", l.ul, "link", "set", "br0", "up")

	l.startRegistry()
	l.Consul = consul.Start(t, consul.Options{NetNS: l.ul, Bind: l.gw.String(), Client: l.gw.String()})

	for i := 1; i <= hosts; i++ {
		h := regHost{ns: fmt.Sprintf("%s-h%d", name, i), ip: netip.AddrFrom4([4]byte{192, 168, byte(subnet), byte(10 + i)}), state: t.TempDir()}
		h.name = h.ns
		testkit.MustRun(t, "ip", "netns", "add", h.ns)
		testkit.MustRun(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
		// The peer is created in the underlay namespace, so its name
		// cannot clash with a link in the root namespace.
		testkit.MustRun(t, "ip", "-n", h.ns, "link", "add", "ul0", "type", "veth", "peer", "name", fmt.Sprintf("h%d", i), "netns", l.ul)
		testkit.MustRun(t, "ip", "-n", l.ul, "link", "set", fmt.Sprintf("h%d", i), "master", "br0", "up")
		testkit.MustRun(t, "ip", "-n", h.ns, "addr", "add", h.ip.String()+"/24", "dev", "ul0")
		testkit.MustRun(t, "ip", "-n", h.ns, "link", "set", "ul0", "up")
		testkit.MustRun(t, "ip", "-n", h.ns, "route", "add", "default", "via", l.gw.String())

		out, err := testkit.RunWithin(cmdTimeout, l.engine2, "start", h.ns, "--insecure-registry", l.Registry)
		t.Cleanup(func() {
			if t.Failed() {
				log, _ := testkit.RunWithin(cmdTimeout, l.engine2, "log", h.ns, "60")
				t.Logf("%s: last lines of its dockerd log:\n%s", h.ns, log)
			}
			if out, err := testkit.RunWithin(cmdTimeout, l.engine2, "stop", h.ns); err != nil {
				t.Errorf("stopping the engine in %s: %v\n%s", h.ns, err, out)
			}
		})
		if err != nil {
			t.Fatalf("starting the engine in %s: %v\n%s", h.ns, err, out)
		}
		h.host = lastLine(out)
		// The test image, built inside that engine (nothing is pulled).
		cmd := exec.Command(filepath.Join(top, "scripts", "busybox-image.sh"), image)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+h.host)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: building %s: %v\n%s", h.ns, image, err, out)
		}
		l.Hosts = append(l.Hosts, h)
	}
	return l
}

// removeLeftovers stops the lab's engines (whatever of them outlived an
// interrupted run) and deletes its namespaces, which takes their links.
// The registry and Consul die with the test process (Pdeathsig).
func (l *regLab) removeLeftovers(hosts int) {
	for i := 1; i <= hosts; i++ {
		ns := fmt.Sprintf("%s-h%d", l.name, i)
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			_, _ = testkit.RunWithin(cmdTimeout, l.engine2, "stop", ns)
			_, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", ns)
		} else if _, err := os.Stat("/tmp/felt-engine-" + ns); err == nil {
			_, _ = testkit.RunWithin(cmdTimeout, l.engine2, "stop", ns)
		}
	}
	if _, err := os.Stat(filepath.Join("/run/netns", l.ul)); err == nil {
		_, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", l.ul)
	}
}

// startRegistry runs bin/registry in the underlay namespace, storing in a
// temporary directory, and waits until it answers.
func (l *regLab) startRegistry() {
	t := l.t
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
`, filepath.Join(dir, "data"), l.Registry)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", l.ul, registryBinary(t), "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its configuration is the file alone: REGISTRY_* variables would
	// override it, and OpenTelemetry stays off.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") && !strings.HasPrefix(kv, "OTEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "OTEL_SDK_DISABLED=true", "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the registry: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("registry log:\n%s", tail(string(b), 10))
		}
	})
	client := l.httpClient()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := client.Get("http://" + l.Registry + "/v2/")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", r.Status)
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("the registry exited:\n%s", tail(string(b), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the registry at %s does not answer: %v", l.Registry, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// httpClient dials from inside the underlay namespace, where the registry
// and Consul listen (a socket stays in the namespace it was made in).
func (l *regLab) httpClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: testkit.NetNSTransport(l.ul)}
}

// consulStore talks to the lab's Consul from the test.
func (l *regLab) consulStore() kv.Store {
	cfg := l.Consul.APIConfig()
	cfg.HttpClient = l.httpClient()
	s, err := consulkv.New(cfg)
	if err != nil {
		l.t.Fatal(err)
	}
	return s
}

// consulKeys lists every key under felt/ in the lab's Consul.
func (l *regLab) consulKeys(t testing.TB) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pairs, _, err := l.consulStore().List(ctx, "felt/")
	if err != nil {
		t.Fatalf("listing felt/ in Consul: %v", err)
	}
	keys := map[string]string{}
	for _, p := range pairs {
		keys[p.Key] = string(p.Value)
	}
	return keys
}

// release runs `make release` against host h's engine and returns the
// pushed reference.
func (l *regLab) release(t testing.TB, h regHost, version string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-s", "-C", l.top, "release", "REGISTRY="+l.Registry, "VERSION="+version)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+h.host)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make release REGISTRY=%s VERSION=%s (DOCKER_HOST=%s): %v\n%s", l.Registry, version, h.host, err, out)
	}
	ref := l.Registry + "/felt:" + version
	if got := lastLine(string(out)); got != ref {
		t.Fatalf("make release printed %q last; want the pushed reference %s\n%s", got, ref, out)
	}
	if ls := h.must(t, "plugin", "ls", "--format", "{{.Name}}"); strings.Contains(ls, ref) {
		t.Fatalf("make release left its vehicle %s installed in %s: %s", ref, h.ns, ls)
	}
	return ref
}

// install installs ref on host h the way the README says, with this lab's
// settings, and removes it at cleanup. alias "" keeps ref as its name.
func (l *regLab) install(t testing.TB, h regHost, ref, alias string) string {
	t.Helper()
	args := []string{"plugin", "install", "--grant-all-permissions"}
	name := ref
	if alias != "" {
		args, name = append(args, "--alias", alias), alias
	}
	args = append(append(args, ref), l.settings(h)...)
	t.Cleanup(func() {
		_, _ = h.docker("plugin", "disable", "-f", name)
		_, _ = h.docker("plugin", "rm", "-f", name)
	})
	h.must(t, args...)
	if got := h.must(t, "plugin", "inspect", "-f", "{{.Enabled}}", name); got != "true" {
		t.Fatalf("%s: %s installed but not enabled", h.ns, name)
	}
	return name
}

// settings are the plugin's settings on host h, as docker plugin install
// and docker plugin set take them.
func (l *regLab) settings(h regHost) []string {
	return []string{"CONSUL_HTTP_ADDR=" + l.Consul.Addr, "FELT_IFACE=ul0", "state.source=" + h.state,
		"FELT_LOG_LEVEL=debug", "FELT_RESYNC_INTERVAL=2s"}
}

// pluginVersionLogged waits until host h's dockerd log shows felt's first
// line naming version (the plugin's output is in the engine's log).
func (l *regLab) pluginVersionLogged(t testing.TB, h regHost, version string) {
	t.Helper()
	started := regexp.MustCompile(`felt starting.* version=` + regexp.QuoteMeta(version) + `([" ]|$)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		// dockerd quotes the plugin's line: msg="... msg=\"felt starting\" version=…"
		log, _ := testkit.RunWithin(cmdTimeout, l.engine2, "log", h.ns, "100000")
		for _, line := range strings.Split(log, "\n") {
			if started.MatchString(line) {
				return
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, line := range strings.Split(log, "\n") {
				if strings.Contains(line, "felt starting") || strings.Contains(line, "felt stopped") ||
					strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") || strings.Contains(line, "plugin") && strings.Contains(line, "level=warning") {
					seen = append(seen, line)
				}
			}
			t.Fatalf("%s: felt's start with version=%s is not in the engine's log; its starts, warnings and errors:\n%s", h.ns, version, tail(strings.Join(seen, "\n"), 30))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// ctrIP is a container's address on a network.
func ctrIP(t testing.TB, h regHost, ctr, network string) netip.Addr {
	t.Helper()
	s := h.must(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, network), ctr)
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("%s: container %s has address %q on %s", h.ns, ctr, s, network)
	}
	return a
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// TestRegistryInstall: the path of a user who installs a release. `make
// release` builds the plugin and pushes it to a registry from one host's
// engine; every host then runs the README's install command, settings
// included, and containers on the two hosts reach each other across a felt
// network. felt's first log line names the version the plugin is tagged with.
func TestRegistryInstall(t *testing.T) {
	regLabAvailable(t)
	const version = "0.0.1-e2e.registry"
	l := newRegLab(t, "felt-rg", 95, 2)

	ref := l.release(t, l.Hosts[0], version)
	// The registry holds it under the version's tag.
	r, err := l.httpClient().Get("http://" + l.Registry + "/v2/felt/tags/list")
	if err != nil {
		t.Fatalf("asking the registry for felt's tags: %v", err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(body), `"`+version+`"`) {
		t.Fatalf("the registry's tags of felt: %s; want %s", body, version)
	}

	const pool, network = "10.91.0.0/16", "felt-rg-net"
	addrs := map[string]netip.Addr{}
	for _, h := range l.Hosts {
		name := l.install(t, h, ref, "")
		if name != ref || h.must(t, "plugin", "inspect", "-f", "{{.PluginReference}}", ref) != ref {
			t.Fatalf("%s: plugin %s not installed from %s", h.ns, name, ref)
		}
		l.pluginVersionLogged(t, h, version)
		h.must(t, "network", "create", "-d", ref, "--ipam-driver", ref, "--subnet", pool, network)
		t.Cleanup(func() { _, _ = h.docker("network", "rm", network) })
		ctr := h.ns + "-c"
		h.must(t, "run", "-d", "--name", ctr, "--network", network, image, "sleep", "1d")
		t.Cleanup(func() { _, _ = h.docker("rm", "-f", ctr) })
		addrs[h.ns] = ctrIP(t, h, ctr, network)
	}
	a, b := l.Hosts[0], l.Hosts[1]
	if sa, sb := netip.PrefixFrom(addrs[a.ns], 24).Masked(), netip.PrefixFrom(addrs[b.ns], 24).Masked(); sa == sb {
		t.Fatalf("both hosts' containers in %s: want each host its own subnet", sa)
	}
	pingUntil(t, a.engine, a.ns+"-c", addrs[b.ns].String())
	pingUntil(t, b.engine, b.ns+"-c", addrs[a.ns].String())

	// Both hosts' leases are in the lab's Consul, beside the shared
	// state's format record, which names the felt that wrote it.
	keys := l.consulKeys(t)
	leases := 0
	for k := range keys {
		if strings.HasPrefix(k, "felt/leases/") {
			leases++
		}
	}
	if leases != 2 || keys["felt/format"] != `{"version":1,"writer":"felt `+version+`"}` {
		t.Fatalf("Consul holds %d leases and format record %q; want 2 and format 1 by felt %s\n%v", leases, keys["felt/format"], version, keys)
	}
}
