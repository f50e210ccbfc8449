package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
)

// The version matrix: the user's whole flow, once per Docker engine, each a
// second engine (scripts/engine2.sh) in a network namespace of its own:
// this machine's 20.10 binaries, Debian trixie's Docker 26 and Docker 29
// built from source (scripts/engines.sh puts both in a cache). The hosts
// share an underlay (a bridge in the namespace felt-mx-ul, where Consul
// listens), so two of them, 20.10 and 29, also carry one felt network
// between them.
//
// What differs between engines is written down per engine in mxEngines,
// and the assertions accept exactly that engine's behaviour.

const (
	mxPlugin  = "felt-mx:latest"
	mxUL      = "felt-mx-ul"    // the underlay namespace: a bridge, Consul, outside servers
	mxBridge  = "fmx-br"        // in mxUL
	mxULAddr  = "192.168.93.1"  // mxBridge's address
	mxHostIF  = "ul0"           // each host's underlay interface (FELT_IFACE)
	mxWebPort = "18080"         // -p on each host
	mxOutPort = "18081"         // a server in mxUL: "the outside world" of each host
	mxOutBody = "outside-world" // what it serves
)

// mxEngine is one engine of the matrix and what is particular to it.
type mxEngine struct {
	name string // as in test names and the README's table
	bin  string // scripts/engines.sh dir argument; "" is this machine's engine
	ns   string // its host's network namespace (at most 14 characters: engine2.sh)
	addr string // its host's underlay address
	base int    // second octet of its felt pools: 10.base.0.0/16 and up

	// version is the start of the server version the engine reports.
	version string
	// inspectLease: docker network inspect shows this host's lease (the
	// /24 felt's RequestPool answered), not the --subnet the user gave.
	inspectLease bool
	// ipRefusal matches the refusal of `docker run --ip` with an address of
	// the pool outside this host's /24 (%s: that address).
	ipRefusal string
	// fields are the mxRequestFields this engine's requests carry.
	fields []string
	// knownLog matches dockerd log lines about felt's networks that are
	// errors or warnings but harmless, per engine; any other such line fails.
	knownLog []string
}

var mxEngines = []mxEngine{
	{
		name: "20.10", bin: "", ns: "felt-mx-20", addr: "192.168.93.20", base: 70,
		version: "20.10.",
		// Docker 20.10 checks --ip against the pool felt returned (this
		// host's /24) itself, before asking felt.
		ipRefusal: `Invalid address %s: It does not belong to any of this network's subnets`,
		knownLog:  mxLibnetworkRestart,
		fields:    mxFieldsBefore29,
	},
	{
		name: "26", bin: "26", ns: "felt-mx-26", addr: "192.168.93.26", base: 74,
		version:   "26.1.",
		ipRefusal: `invalid address %s: It does not belong to any of this network's subnets`,
		knownLog:  mxLibnetworkRestart,
		fields:    mxFieldsBefore29,
	},
	{
		name: "29", bin: "29", ns: "felt-mx-29", addr: "192.168.93.29", base: 78,
		version:      "29.",
		inspectLease: true,
		ipRefusal:    `no configured subnet contains IP address %s`,
		knownLog: []string{
			// dockerd 29 keeps a table of the endpoints joined through a
			// plugin's registration, which starts empty when the plugin
			// comes back (a kill, a restart): revoking the external
			// connectivity of an endpoint joined before fails in dockerd
			// itself, before any call to felt (which never programs any:
			// its endpoints are never a container's gateway).
			`msg="driver failed revoking external connectivity on endpoint" .*error="remote network driver: endpoint [0-9a-f]{64} not found"`,
			mxLibnetworkRestart[1],
		},
		// New in the requests: the network's IPv4 switch, the IPAM data's
		// auxiliary addresses, the endpoint's (container's) name.
		fields: append([]string{"com.docker.network.enable_ipv4", "AuxAddresses", "com.docker.network.endpoint.name"}, mxFieldsBefore29...),
	},
}

// mxLibnetworkRestart: Docker 20.10 and 26, started without --live-restore
// after a run with containers, remove the endpoints of the previous run and
// warn while doing so, with Docker's own bridge networks alone too.
var mxLibnetworkRestart = []string{
	`Error \(Unable to complete atomic operation, key modified\) deleting object \[endpoint [0-9a-f]{64} [0-9a-f]{64}\], retrying`,
	`Failed deleting endpoint [0-9a-f]{64}: failed to get endpoint from store during Delete: could not find endpoint [0-9a-f]{64}: (\[\]|Key not found in store)`,
}

// mxFieldsBefore29: what Docker 20.10 and 26 send of mxRequestFields.
var mxFieldsBefore29 = []string{"com.docker.network.enable_ipv6", "com.docker.network.portmap",
	"com.docker.network.endpoint.exposedports"}

// mxHost is one engine running on its host.
type mxHost struct {
	mxEngine
	e   engine
	log string // its dockerd log
}

func TestMatrix(t *testing.T) {
	testkit.NeedCommands(t, "dockerd", "containerd", "runc", "nsenter", "unshare", "ip", "bash", "docker-compose", "busybox")
	consul.Binary(t) // skips (fails with CI=true) without bin/consul
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	engine2 := engine2Script(t)
	cleanup := func() {
		for _, v := range mxEngines {
			_, _ = testkit.RunWithin(cmdTimeout, engine2, "stop", v.ns)
			_, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", v.ns)
		}
		_, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", mxUL)
	}
	cleanup()
	t.Cleanup(cleanup) // a safety net; each piece also has its own

	// The underlay: a bridge in its own namespace, Consul on it, and a web
	// server standing for whatever lies outside the hosts.
	testkit.MustRun(t, "ip", "netns", "add", mxUL)
	t.Cleanup(func() { _, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", mxUL) })
	testkit.MustRun(t, "ip", "-n", mxUL, "link", "set", "lo", "up")
	testkit.MustRun(t, "ip", "-n", mxUL, "link", "add", mxBridge, "type", "bridge")
	testkit.MustRun(t, "ip", "-n", mxUL, "addr", "add", mxULAddr+"/24", "dev", mxBridge)
	testkit.MustRun(t, "ip", "-n", mxUL, "link", "set", mxBridge, "up")
	agent := consul.Start(t, consul.Options{NetNS: mxUL, Bind: mxULAddr, Client: mxULAddr})
	www := t.TempDir()
	if err := os.WriteFile(filepath.Join(www, "o"), []byte(mxOutBody+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stranger(t, "busybox", "ip", "netns", "exec", mxUL, "busybox", "httpd", "-f", "-p", mxULAddr+":"+mxOutPort, "-h", www)

	pluginDir := t.TempDir()
	if out, err := testkit.RunWithin(cmdTimeout, filepath.Join(top, "scripts", "plugin-rootfs.sh"), pluginDir); err != nil {
		t.Fatalf("plugin rootfs: %v\n%s", err, out)
	}

	hosts := map[string]*mxHost{}
	for _, v := range mxEngines {
		t.Run("docker "+v.name, func(t *testing.T) {
			bin := ""
			if v.bin != "" {
				dir, err := testkit.RunWithin(cmdTimeout, filepath.Join(top, "scripts", "engines.sh"), "dir", v.bin)
				if err != nil {
					testkit.Unavailable(t, "Docker %s is not in the engines cache (make engines): %s", v.name, dir)
				}
				bin = lastLine(dir)
			}
			h := mxStart(t, v, bin, engine2, pluginDir, agent.Addr)
			hosts[v.name] = h
			mxFlow(t, h, engine2)
			mxCompose(t, h)
		})
	}
	t.Run("20.10 with 29 across hosts", func(t *testing.T) {
		a, b := hosts["20.10"], hosts["29"]
		if a == nil || b == nil {
			t.Fatal("needs the hosts of Docker 20.10 and 29")
		}
		mxAcross(t, a, b)
	})
}

// mxStart makes v's host (namespace, underlay link) and starts its engine
// with --live-restore, the busybox image and felt in it. The host stays
// until the end of the whole matrix: cleanups go to the parent test.
func mxStart(t *testing.T, v mxEngine, bin, engine2, pluginDir, consulAddr string) *mxHost {
	t.Helper()
	testkit.MustRun(t, "ip", "netns", "add", v.ns)
	testkit.MustRun(t, "ip", "-n", v.ns, "link", "set", "lo", "up")
	peer := "fmx-" + v.ns[len("felt-mx-"):]
	testkit.MustRun(t, "ip", "-n", mxUL, "link", "add", peer, "type", "veth", "peer", "name", mxHostIF, "netns", v.ns)
	testkit.MustRun(t, "ip", "-n", mxUL, "link", "set", peer, "master", mxBridge, "up")
	testkit.MustRun(t, "ip", "-n", v.ns, "addr", "add", v.addr+"/24", "dev", mxHostIF)
	testkit.MustRun(t, "ip", "-n", v.ns, "link", "set", mxHostIF, "up")
	testkit.MustRun(t, "ip", "-n", v.ns, "route", "add", "default", "via", mxULAddr)

	start := time.Now()
	cmd := exec.Command(engine2, "start", v.ns, "--live-restore")
	cmd.Env = append(os.Environ(), "ENGINE2_BIN="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("starting Docker %s in %s: %v\n%s", v.name, v.ns, err, out)
	}
	h := &mxHost{mxEngine: v, e: engine{name: "Docker " + v.name, host: lastLine(string(out))},
		log: "/tmp/felt-engine-" + v.ns + "/dockerd.log"}
	t.Cleanup(func() {
		if t.Failed() {
			mxDiagnostics(t, h)
		}
	})
	if ver := h.e.must(t, "version", "-f", "{{.Server.Version}}"); !strings.HasPrefix(ver, v.version) {
		t.Fatalf("Docker %s engine reports version %s", v.name, ver)
	}
	t.Logf("Docker %s (%s) in %s, ready in %s", v.name, h.e.must(t, "version", "-f", "{{.Server.Version}} API {{.Server.APIVersion}}"),
		v.ns, time.Since(start).Round(time.Millisecond))
	loadImage(t, h.e)
	h.e.must(t, "plugin", "create", mxPlugin, pluginDir)
	h.e.must(t, "plugin", "set", mxPlugin, "state.source="+t.TempDir(), "CONSUL_HTTP_ADDR="+consulAddr,
		"FELT_IFACE="+mxHostIF, "FELT_LOG_LEVEL=debug")
	h.e.must(t, "plugin", "enable", mxPlugin)
	return h
}

// mxNet creates a felt network of pool 10.<base+i>.0.0/16 on h.
func mxNet(t testing.TB, h *mxHost, name string, i int, flags ...string) string {
	t.Helper()
	pool := fmt.Sprintf("10.%d.0.0/16", h.base+i)
	args := append([]string{"network", "create", "-d", mxPlugin, "--ipam-driver", mxPlugin, "--subnet", pool}, flags...)
	h.e.must(t, append(args, name)...)
	return pool
}

// mxRun starts a detached container that Docker restarts with the engine.
func mxRun(t testing.TB, h *mxHost, name, net string, flags []string, cmd ...string) {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name, "--network", net, "--restart=always", "--stop-timeout=1"}, flags...)
	if len(cmd) == 0 {
		cmd = []string{"sleep", "1d"}
	}
	h.e.must(t, append(append(args, image), cmd...)...)
}

func mxIP(t testing.TB, h *mxHost, name, net string) string {
	t.Helper()
	return h.e.must(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, net), name)
}

// mxNoPing fails if ctr on h reaches to.
func mxNoPing(t testing.TB, h *mxHost, ctr, to, what string) {
	t.Helper()
	if out, err := h.e.docker("exec", ctr, "ping", "-c", "2", "-W", "1", to); err == nil {
		t.Errorf("Docker %s: isolation broken: %s (%s) reached %s:\n%s", h.name, ctr, what, to, out)
	}
}

// mxFlow is the user's flow on one engine: ping by address and name,
// isolation between felt networks and from a Docker bridge network, -p,
// reaching outside, --internal, --ip, docker network inspect, then the
// same checks after a SIGKILL of the plugin, a dockerd restart with
// --live-restore and one without.
func mxFlow(t *testing.T, h *mxHost, engine2 string) {
	redPool := mxNet(t, h, "red", 0)
	mxNet(t, h, "blue", 1)
	mxNet(t, h, "inner", 2, "--internal")
	h.e.must(t, "network", "create", "-d", "bridge", "plain")
	mxRun(t, h, "red-a", "red", nil)
	mxRun(t, h, "red-b", "red", nil)
	mxRun(t, h, "blue-a", "blue", nil)
	mxRun(t, h, "plain-a", "plain", nil)
	mxRun(t, h, "inner-a", "inner", nil)
	mxRun(t, h, "web", "red", []string{"-p", mxWebPort + ":80"}, "sh", "-c", "echo hello-felt > /tmp/index.html && exec httpd -f -p 80 -h /tmp")

	// This host's /24 of the pool, from a container's address.
	redA, err := netip.ParseAddr(mxIP(t, h, "red-a", "red"))
	if err != nil || !netip.MustParsePrefix(redPool).Contains(redA) {
		t.Fatalf("red-a got %q, want an address of %s", redA, redPool)
	}
	lease, _ := redA.Prefix(24)

	// docker network inspect: the pool the user gave, or this host's lease.
	want := redPool
	if h.inspectLease {
		want = lease.String()
	}
	if got := h.e.must(t, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", "red"); strings.TrimSpace(got) != want {
		t.Errorf("Docker %s: docker network inspect shows subnet %q, want %s", h.name, got, want)
	}
	if plen := h.e.must(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "red").IPPrefixLen}}`, "red-a"); plen != "24" {
		t.Errorf("Docker %s: container prefix length %s, want the host's /24", h.name, plen)
	}

	// --ip: an address of this host's /24, and one of the pool outside it.
	static := netip.AddrFrom4([4]byte{redA.As4()[0], redA.As4()[1], redA.As4()[2], 77})
	mxRun(t, h, "red-static", "red", []string{"--ip", static.String()})
	if got := mxIP(t, h, "red-static", "red"); got != static.String() {
		t.Errorf("Docker %s: --ip %s gave %s", h.name, static, got)
	}
	outside := fmt.Sprintf("10.%d.250.250", h.base)
	if lease.Contains(netip.MustParseAddr(outside)) {
		outside = fmt.Sprintf("10.%d.251.250", h.base)
	}
	out, err := h.e.docker("run", "--rm", "--network", "red", "--ip", outside, image, "true")
	if err == nil {
		t.Errorf("Docker %s: --ip %s outside this host's %s was accepted", h.name, outside, lease)
	} else if want := fmt.Sprintf(h.ipRefusal, outside); !strings.Contains(out, want) {
		t.Errorf("Docker %s: --ip %s outside this host's %s refused with:\n%s\nwant it to contain %q", h.name, outside, lease, out, want)
	}

	check := func(phase string) {
		t.Helper()
		t.Logf("Docker %s: checks %s", h.name, phase)
		ip := func(ctr, net string) string { return mxIP(t, h, ctr, net) }
		redB, blueA, plainA, redAip := ip("red-b", "red"), ip("blue-a", "blue"), ip("plain-a", "plain"), ip("red-a", "red")
		pingUntil(t, h.e, "red-a", redB)
		pingUntil(t, h.e, "red-b", redAip)
		pingUntil(t, h.e, "red-a", "red-b") // by name: Docker's DNS on a felt network
		mxNoPing(t, h, "red-a", blueA, "felt network red to felt network blue")
		mxNoPing(t, h, "blue-a", redAip, "felt network blue to felt network red")
		mxNoPing(t, h, "plain-a", redAip, "Docker bridge network to felt network red")
		mxNoPing(t, h, "red-a", plainA, "felt network red to a Docker bridge network")
		// -p from outside the host, and the host's outside from containers.
		body := ""
		deadline := time.Now().Add(pingTimeout)
		for !strings.Contains(body, "hello-felt") && time.Now().Before(deadline) {
			body, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "exec", mxUL, "busybox", "timeout", "5", "busybox", "wget", "-q", "-O", "-",
				"http://"+h.addr+":"+mxWebPort+"/index.html")
			if !strings.Contains(body, "hello-felt") {
				time.Sleep(300 * time.Millisecond)
			}
		}
		if !strings.Contains(body, "hello-felt") {
			t.Errorf("Docker %s: -p %s:80 not reachable from the underlay at %s (got %q)", h.name, mxWebPort, h.addr, body)
		}
		outURL := "http://" + mxULAddr + ":" + mxOutPort + "/o"
		// busybox 1.35's wget -T crashes: timeout bounds it instead.
		if out, err := h.e.docker("exec", "red-a", "timeout", "10", "wget", "-q", "-O", "-", outURL); err != nil || !strings.Contains(out, mxOutBody) {
			t.Errorf("Docker %s: a container on felt network red cannot reach %s: %v\n%s", h.name, outURL, err, out)
		}
		if out, err := h.e.docker("exec", "inner-a", "timeout", "5", "wget", "-q", "-O", "-", outURL); err == nil || strings.Contains(out, mxOutBody) {
			t.Errorf("Docker %s: a container on the --internal felt network reached %s:\n%s", h.name, outURL, out)
		}
	}
	check("after start")

	// The plugin killed: Docker restarts it; containers stay connected and a
	// new one gets a fresh address.
	since := mxLogSize(t, h)
	old := mxPluginPID(t, h)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for p := mxPluginPID(t, h); p == 0 || p == old; p = mxPluginPID(t, h) {
		if time.Now().After(deadline) {
			t.Fatalf("Docker %s did not restart the killed plugin", h.name)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mxWaitReactivated(t, h, since)
	mxRun(t, h, "red-c", "red", nil)
	if c := mxIP(t, h, "red-c", "red"); c == redA.String() || c == mxIP(t, h, "red-b", "red") || c == static.String() {
		t.Errorf("Docker %s: a container started after the plugin's restart got %s, in use", h.name, c)
	}
	pingUntil(t, h.e, "red-c", redA.String())
	check("after the plugin was killed")
	mxCheckLog(t, h, since, "plugin SIGKILL")

	restart := func(flags ...string) {
		t.Helper()
		start := time.Now()
		out, err := testkit.RunWithin(cmdTimeout, append([]string{engine2, "restart", h.ns}, flags...)...)
		if err != nil {
			t.Fatalf("Docker %s: restarting dockerd %v: %v\n%s", h.name, flags, err, out)
		}
		t.Logf("Docker %s: dockerd restarted %v in %s", h.name, flags, time.Since(start).Round(time.Millisecond))
	}
	pids := h.e.must(t, "inspect", "-f", "{{.State.Pid}}", "red-a", "red-b", "blue-a", "plain-a")
	since = mxLogSize(t, h)
	restart("--live-restore")
	if got := h.e.must(t, "inspect", "-f", "{{.State.Pid}}", "red-a", "red-b", "blue-a", "plain-a"); got != pids {
		t.Errorf("Docker %s: live-restore did not keep the containers: pids %q, before %q", h.name, got, pids)
	}
	check("after a dockerd restart with --live-restore")
	mxCheckLog(t, h, since, "restart with --live-restore")

	since = mxLogSize(t, h)
	restart() // the --live-restore dockerd leaves them running; this one restarts them
	mxWaitRunning(t, h, "red-a", "red-b", "blue-a", "plain-a", "inner-a", "web")
	restart() // this one's dockerd stops containers and plugin, and starts them again
	mxWaitRunning(t, h, "red-a", "red-b", "blue-a", "plain-a", "inner-a", "web")
	check("after a dockerd restart without --live-restore")
	mxCheckLog(t, h, since, "restart without --live-restore")
	mxRequests(t, h)
}

// mxRequestFields are request fields some engines send and others do not.
var mxRequestFields = []string{
	"com.docker.network.enable_ipv4", "com.docker.network.enable_ipv6", "AuxAddresses",
	"com.docker.network.endpoint.name", "com.docker.network.endpoint.ifname", "com.docker.network.portmap",
	"com.docker.network.endpoint.exposedports", "com.docker.network.endpoint.sysctls",
}

// mxRequests logs which plugin calls h's engine made, and checks that its
// requests carried exactly the mxRequestFields of h.fields.
func mxRequests(t testing.TB, h *mxHost) {
	t.Helper()
	b, err := os.ReadFile(h.log)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]bool{}
	for _, m := range regexp.MustCompile(`msg=request call=(/[A-Za-z.]+)`).FindAllSubmatch(b, -1) {
		calls[string(m[1])] = true
	}
	var cs []string
	for c := range calls {
		cs = append(cs, c)
	}
	sort.Strings(cs)
	t.Logf("Docker %s: calls %s", h.name, strings.Join(cs, " "))
	want := map[string]bool{}
	for _, f := range h.fields {
		want[f] = true
	}
	for _, f := range mxRequestFields {
		if got := strings.Contains(string(b), `\\\"`+f+`\\\"`); got != want[f] {
			t.Errorf("Docker %s: request field %s sent: %v, want %v", h.name, f, got, want[f])
		}
	}
}

// mxWaitReactivated waits until dockerd has asked the restarted plugin for
// its capabilities (after offset since of its log), which it does when it
// registers the plugin's drivers anew. Docker 29 keeps a table of the
// endpoints joined through each registration: a container started before
// the new one replaces the old can fail with "driver failed programming
// external connectivity on endpoint …: remote network driver: endpoint …
// not found", as a user's might in the second after a crash.
func mxWaitReactivated(t testing.TB, h *mxHost, since int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(h.log)
		if err != nil {
			t.Fatal(err)
		}
		if since > int64(len(b)) {
			since = 0
		}
		l := string(b[since:])
		if strings.Contains(l, "msg=request call=/NetworkDriver.GetCapabilities") && strings.Contains(l, "msg=request call=/IpamDriver.GetCapabilities") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Docker %s did not activate the restarted plugin again within 60 s", h.name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mxWaitRunning waits until the containers run again.
func mxWaitRunning(t testing.TB, h *mxHost, names ...string) {
	t.Helper()
	want := strings.TrimSpace(strings.Repeat("true\n", len(names)))
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := h.e.must(t, append([]string{"inspect", "-f", "{{.State.Running}}"}, names...)...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Docker %s: containers %v not running 60 s after the restart: %q", h.name, names, got)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// mxPluginPID is the felt process of h's plugin (0 if none).
func mxPluginPID(t testing.TB, h *mxHost) int {
	t.Helper()
	return feltPID(h.e.must(t, "plugin", "inspect", "-f", "{{.Id}}", mxPlugin))
}

func mxLogSize(t testing.TB, h *mxHost) int64 {
	t.Helper()
	fi, err := os.Stat(h.log)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// mxCheckLog: no felt call failed, and every error or warning dockerd
// logged since offset since about a felt network or the plugin is one this
// engine is known to log (mxEngine.knownLog); each known one seen is logged.
func mxCheckLog(t testing.TB, h *mxHost, since int64, phase string) {
	t.Helper()
	b, err := os.ReadFile(h.log)
	if err != nil {
		t.Fatal(err)
	}
	if since > int64(len(b)) {
		since = 0
	}
	var known []*regexp.Regexp
	for _, k := range h.knownLog {
		known = append(known, regexp.MustCompile(k))
	}
	seen := map[string]int{}
lines:
	for _, l := range strings.Split(string(b[since:]), "\n") {
		if strings.Contains(l, "request failed") {
			t.Errorf("Docker %s, %s: a felt call failed: %s", h.name, phase, l)
			continue
		}
		// Errors and warnings about networks, not the plugin's own output
		// (its failures are "request failed" above) nor containerd's.
		if !(strings.Contains(l, "level=error") || strings.Contains(l, "level=warn")) || strings.Contains(l, "plugin=") ||
			!(strings.Contains(l, "driver") || strings.Contains(l, "endpoint") || strings.Contains(l, "network") || strings.Contains(l, mxPlugin)) {
			continue
		}
		for i, k := range known {
			if k.MatchString(l) {
				seen[h.knownLog[i]]++
				continue lines
			}
		}
		t.Errorf("Docker %s, %s: dockerd logged: %s", h.name, phase, l)
	}
	for k, n := range seen {
		t.Logf("Docker %s, %s: dockerd logged %d× the known %q", h.name, phase, n, k)
	}
}

// mxCompose: a docker-compose project whose services share a felt network
// defined in the compose file (driver and IPAM driver felt, a subnet) and
// reach each other by address and by service name.
func mxCompose(t *testing.T, h *mxHost) {
	dir := t.TempDir()
	pool := fmt.Sprintf("10.%d.0.0/16", h.base+3)
	file := filepath.Join(dir, "docker-compose.yml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(`version: "2.4"
services:
  front:
    image: %[1]s
    command: sleep 1d
    networks: [overlay]
  back:
    image: %[1]s
    command: sleep 1d
    networks: [overlay]
networks:
  overlay:
    driver: %[2]s
    ipam:
      driver: %[2]s
      config:
        - subnet: %[3]s
`, image, mxPlugin, pool)), 0o644); err != nil {
		t.Fatal(err)
	}
	compose := func(args ...string) (string, error) {
		ctx := exec.Command("docker-compose", append([]string{"-p", "feltmx", "-f", file}, args...)...)
		ctx.Env = append(os.Environ(), "DOCKER_HOST="+h.e.host)
		out, err := ctx.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := compose("up", "-d"); err != nil {
		t.Fatalf("Docker %s: docker-compose up: %v\n%s", h.name, err, out)
	}
	defer func() {
		if out, err := compose("down"); err != nil {
			t.Errorf("Docker %s: docker-compose down: %v\n%s", h.name, err, out)
		}
		if out, err := h.e.docker("network", "inspect", "feltmx_overlay"); err == nil {
			t.Errorf("Docker %s: the compose network outlived docker-compose down:\n%s", h.name, out)
		}
	}()
	if d := h.e.must(t, "network", "inspect", "-f", "{{.Driver}} {{.IPAM.Driver}}", "feltmx_overlay"); d != mxPlugin+" "+mxPlugin {
		t.Errorf("Docker %s: the compose network has drivers %q, want felt's", h.name, d)
	}
	back := mxIP(t, h, "feltmx_back_1", "feltmx_overlay")
	if a, err := netip.ParseAddr(back); err != nil || !netip.MustParsePrefix(pool).Contains(a) {
		t.Errorf("Docker %s: compose service back got %q, want an address of %s", h.name, back, pool)
	}
	pingUntil(t, h.e, "feltmx_front_1", back)
	pingUntil(t, h.e, "feltmx_front_1", "back")
	pingUntil(t, h.e, "feltmx_back_1", "front")
	t.Logf("Docker %s: docker-compose services on a felt network of the compose file reach each other by address and name", h.name)
}

// mxAcross: one felt network on two hosts of different engine versions;
// their containers ping each other over the vxlan overlay.
func mxAcross(t *testing.T, a, b *mxHost) {
	const pool = "10.69.0.0/16"
	addr := map[*mxHost]netip.Addr{}
	for _, h := range []*mxHost{a, b} {
		h.e.must(t, "network", "create", "-d", mxPlugin, "--ipam-driver", mxPlugin, "--subnet", pool, "across")
		mxRun(t, h, "across", "across", nil)
		ip, err := netip.ParseAddr(mxIP(t, h, "across", "across"))
		if err != nil || !netip.MustParsePrefix(pool).Contains(ip) {
			t.Fatalf("Docker %s: container address %q, want one of %s", h.name, ip, pool)
		}
		addr[h] = ip
	}
	sa, _ := addr[a].Prefix(24)
	sb, _ := addr[b].Prefix(24)
	if sa == sb {
		t.Fatalf("both hosts got %s: want different /24s of %s", sa, pool)
	}
	pingUntil(t, a.e, "across", addr[b].String())
	pingUntil(t, b.e, "across", addr[a].String())
}

// mxDiagnostics logs what helps understand a failure on h.
func mxDiagnostics(t testing.TB, h *mxHost) {
	out, _ := h.e.docker("ps", "-a")
	t.Logf("Docker %s: docker ps -a:\n%s", h.name, out)
	for _, c := range [][]string{{"iptables", "-S", "FORWARD"}, {"iptables", "-S", "FELT"}, {"ip", "-o", "link"}, {"ip", "route"}} {
		out, _ := testkit.RunWithin(cmdTimeout, testkit.NetNSExec(h.ns, c...)...)
		t.Logf("Docker %s: %s:\n%s", h.name, strings.Join(c, " "), out)
	}
	b, _ := os.ReadFile(h.log)
	// The whole log outlives the engine (engine2.sh stop removes it).
	keepAll := filepath.Join(os.TempDir(), "felt-matrix-"+h.ns+"-dockerd.log")
	if err := os.WriteFile(keepAll, b, 0o644); err == nil {
		t.Logf("Docker %s: its whole dockerd log is kept in %s", h.name, keepAll)
	}
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=error") || strings.Contains(l, "level=warn") || strings.HasPrefix(l, "engine2:") ||
			(strings.Contains(l, "plugin=") && !strings.Contains(l, "level=debug")) {
			keep = append(keep, l)
		}
	}
	if len(keep) > 60 {
		keep = keep[len(keep)-60:]
	}
	t.Logf("Docker %s: dockerd log (%s), warnings, errors, plugin output:\n%s", h.name, h.log, strings.Join(keep, "\n"))
}
