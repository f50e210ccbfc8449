package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
)

// TestDaemonRestart's engine, names and addresses.
const (
	drPlugin = "felt-dr:latest" // not felt:latest, felt-e2e:latest nor felt-2e:latest: others have those
	drLabel  = "felt-dr"
	drNS     = "felt-dr-h" // the engine's host (at most 14 characters: engine2.sh)
	drUL     = "fdr-ul0"   // the underlay, a veth whose peer (fdr-ul1) is in drNS too: no traffic leaves it
	drULPeer = "fdr-ul1"
	drULAddr = "192.168.89.1/24"
	drPool   = "10.63.0.0/16"
	drNet    = "felt-dr-net"
)

// TestDaemonRestart: dockerd restarts while felt containers run, on an engine
// of its own in the network namespace felt-dr-h (scripts/engine2.sh; this
// machine's dockerd is never restarted), felt with its embedded store.
//
// With --live-restore (engine2.sh restart: SIGTERM dockerd, which stops its
// containerd; the shims, containers and the plugin keep running; a new dockerd
// and containerd re-attach): the containers are the same processes and still
// ping each other, a new container gets an address of its own, and Leave,
// DeleteEndpoint, ReleaseAddress and DeleteNetwork of objects made before the
// restart succeed: their host veths and the network's bridge go away.
//
// Without it: dockerd stops the containers and the plugin; --restart=always
// containers come back with new endpoints and ping each other.
func TestDaemonRestart(t *testing.T) {
	testkit.NeedCommands(t, "dockerd", "containerd", "runc", "nsenter", "unshare", "ip", "bash")
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	engine2 := filepath.Join(top, "scripts", "engine2.sh")
	// Made before the engine starts, so removed after it stops.
	pluginDir, state := t.TempDir(), t.TempDir()

	removeDaemonRestartLeftovers(engine2)
	t.Cleanup(func() { removeDaemonRestartLeftovers(engine2) }) // runs last: a safety net

	// The host: a namespace with an underlay of its own.
	testkit.MustRun(t, "ip", "netns", "add", drNS)
	t.Cleanup(func() { _, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", drNS) })
	testkit.MustRun(t, "ip", "-n", drNS, "link", "set", "lo", "up")
	testkit.MustRun(t, "ip", "-n", drNS, "link", "add", drUL, "type", "veth", "peer", "name", drULPeer)
	testkit.MustRun(t, "ip", "-n", drNS, "addr", "add", drULAddr, "dev", drUL)
	testkit.MustRun(t, "ip", "-n", drNS, "link", "set", drUL, "up")
	testkit.MustRun(t, "ip", "-n", drNS, "link", "set", drULPeer, "up")

	start := time.Now()
	host, err := testkit.RunWithin(cmdTimeout, engine2, "start", drNS, "--live-restore")
	t.Cleanup(func() {
		if out, err := testkit.RunWithin(cmdTimeout, engine2, "stop", drNS); err != nil {
			t.Errorf("stopping the engine: %v\n%s", err, out)
		}
	})
	if err != nil {
		t.Fatalf("starting the engine in %s: %v\n%s", drNS, err, host)
	}
	e := engine{name: "restarting", host: lastLine(host)}
	t.Logf("engine %s in namespace %s, ready in %s", e.host, drNS, time.Since(start).Round(time.Millisecond))
	logPath := fmt.Sprintf("/tmp/felt-engine-%s/dockerd.log", drNS)
	t.Cleanup(func() { // runs before the engine stops
		if t.Failed() {
			drDiagnostics(t, e, logPath)
		}
	})
	restart := func(flags ...string) {
		t.Helper()
		start := time.Now()
		out, err := testkit.RunWithin(cmdTimeout, append([]string{engine2, "restart", drNS}, flags...)...)
		if err != nil {
			t.Fatalf("restarting dockerd %v: %v\n%s", flags, err, out)
		}
		t.Logf("dockerd restarted %v in %s", flags, time.Since(start).Round(time.Millisecond))
	}

	if out, err := testkit.RunWithin(cmdTimeout, "bash", "-o", "pipefail", "-c", fmt.Sprintf("docker save %s | docker -H %s load -q", image, e.host)); err != nil {
		t.Fatalf("loading %s into the engine: %v\n%s", image, err, out)
	}
	if out, err := testkit.RunWithin(cmdTimeout, filepath.Join(top, "scripts", "plugin-rootfs.sh"), pluginDir); err != nil {
		t.Fatalf("plugin rootfs: %v\n%s", err, out)
	}
	e.must(t, "plugin", "create", drPlugin, pluginDir)
	t.Cleanup(func() {
		_, _ = e.docker("plugin", "disable", "-f", drPlugin)
		_, _ = e.docker("plugin", "rm", "-f", drPlugin)
	})
	e.must(t, "plugin", "set", drPlugin, "state.source="+state, "FELT_IFACE="+drUL, "FELT_LOG_LEVEL=debug")
	e.must(t, "plugin", "enable", drPlugin)

	createNet := func() string {
		t.Helper()
		id := e.must(t, "network", "create", "-d", drPlugin, "--ipam-driver", drPlugin, "--label", drLabel, "--subnet", drPool, drNet)
		t.Cleanup(func() { _, _ = e.docker("network", "rm", drNet) })
		return lastLine(id)
	}
	run := func(name string, flags ...string) {
		t.Helper()
		args := append([]string{"run", "-d", "--name", name, "--label", drLabel, "--network", drNet}, flags...)
		e.must(t, append(args, image, "sleep", "1d")...)
		t.Cleanup(func() { _, _ = e.docker("rm", "-f", name) })
	}
	inspect := func(name, field string) string {
		t.Helper()
		return e.must(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).%s}}`, drNet, field), name)
	}
	links := func() string { t.Helper(); return testkit.MustRun(t, "ip", "-n", drNS, "-o", "link", "show") }
	hasLink := func(name string) bool { return strings.Contains(links(), " "+name+"@") }
	// waitGone waits (briefly: removal is synchronous, the kernel may lag)
	// until no link of the namespace contains s.
	waitGone := func(s, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for strings.Contains(links(), s) {
			if time.Now().After(deadline) {
				t.Fatalf("%s still in %s:\n%s", what, drNS, links())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	logSize := func() int64 {
		t.Helper()
		fi, err := os.Stat(logPath)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	allGone := func() {
		t.Helper()
		waitGone("alias felt:", "a felt link")
		waitGone(": fv", "an endpoint veth")
	}

	// 1. --live-restore.
	netID := createNet()
	run("felt-dr-a")
	run("felt-dr-b")
	ipA, ipB := inspect("felt-dr-a", "IPAddress"), inspect("felt-dr-b", "IPAddress")
	epA, epB := inspect("felt-dr-a", "EndpointID"), inspect("felt-dr-b", "EndpointID")
	vethA, vethB := "fv"+drShort(epA), "fv"+drShort(epB)
	if ipA == ipB || !hasLink(vethA) || !hasLink(vethB) {
		t.Fatalf("before the restart: addresses %s, %s; veths %s, %s in:\n%s", ipA, ipB, vethA, vethB, links())
	}
	pingUntil(t, e, "felt-dr-a", ipB)
	pingUntil(t, e, "felt-dr-b", ipA)
	pids := e.must(t, "inspect", "-f", "{{.State.Pid}}", "felt-dr-a", "felt-dr-b")

	since := logSize()
	restart("--live-restore")
	if lr := e.must(t, "info", "-f", "{{.LiveRestoreEnabled}}"); lr != "true" {
		t.Fatalf("LiveRestoreEnabled %s after the restart", lr)
	}
	if got := e.must(t, "inspect", "-f", "{{.State.Pid}}", "felt-dr-a", "felt-dr-b"); got != pids {
		running := e.must(t, "inspect", "-f", "{{.Name}} {{.State.Status}} {{.State.Pid}}", "felt-dr-a", "felt-dr-b")
		t.Fatalf("live-restore did not keep the containers: pids before %q, now:\n%s", pids, running)
	}
	pingUntil(t, e, "felt-dr-a", ipB)
	pingUntil(t, e, "felt-dr-b", ipA)
	run("felt-dr-c")
	ipC := inspect("felt-dr-c", "IPAddress")
	if ipC == ipA || ipC == ipB {
		t.Fatalf("new container got %s, in use by a container from before the restart (%s, %s)", ipC, ipA, ipB)
	}
	pingUntil(t, e, "felt-dr-c", ipA)
	// Leave, DeleteEndpoint, ReleaseAddress of an endpoint from before.
	e.must(t, "rm", "-f", "felt-dr-b")
	waitGone(": "+vethB+"@", "the veth "+vethB+" of the removed container")
	if !hasLink(vethA) {
		t.Fatalf("%s of the running container felt-dr-a is gone:\n%s", vethA, links())
	}
	pingUntil(t, e, "felt-dr-a", ipC)
	e.must(t, "rm", "-f", "felt-dr-a", "felt-dr-c")
	// DeleteNetwork (and ReleasePool) of a network from before.
	e.must(t, "network", "rm", drNet)
	allGone()
	drCheckLog(t, logPath, since, map[string][]string{
		"/NetworkDriver.Leave":          {epB, epA},
		"/NetworkDriver.DeleteEndpoint": {epB, epA},
		"/IpamDriver.ReleaseAddress":    {ipB + `\`, ipA + `\`},
		"/NetworkDriver.DeleteNetwork":  {netID},
		"/IpamDriver.ReleasePool":       nil,
	})

	// 2. Without --live-restore: --restart=always containers come back.
	restart() // the live-restore daemon leaves the plugin running; this one restarts it
	if lr := e.must(t, "info", "-f", "{{.LiveRestoreEnabled}}"); lr != "false" {
		t.Fatalf("LiveRestoreEnabled %s after restarting without --live-restore", lr)
	}
	createNet()
	run("felt-dr-d", "--restart=always", "--stop-timeout=1")
	run("felt-dr-e", "--restart=always", "--stop-timeout=1")
	ipD, ipE := inspect("felt-dr-d", "IPAddress"), inspect("felt-dr-e", "IPAddress")
	epD, epE := inspect("felt-dr-d", "EndpointID"), inspect("felt-dr-e", "EndpointID")
	pingUntil(t, e, "felt-dr-d", ipE)

	since = logSize()
	restart()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := e.must(t, "inspect", "-f", "{{.State.Running}}", "felt-dr-d", "felt-dr-e")
		if st == "true\ntrue" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("--restart=always containers not running 30 s after the restart: %q", st)
		}
		time.Sleep(300 * time.Millisecond)
	}
	ipD2, ipE2 := inspect("felt-dr-d", "IPAddress"), inspect("felt-dr-e", "IPAddress")
	epD2, epE2 := inspect("felt-dr-d", "EndpointID"), inspect("felt-dr-e", "EndpointID")
	if epD2 == epD || epE2 == epE || ipD2 == ipE2 {
		t.Fatalf("after the restart: endpoints %s, %s (before %s, %s), addresses %s, %s", epD2, epE2, epD, epE, ipD2, ipE2)
	}
	for _, ep := range []string{epD, epE} {
		waitGone(": fv"+drShort(ep)+"@", "the veth of the endpoint "+drShort(ep)+" from before the restart")
	}
	pingUntil(t, e, "felt-dr-d", ipE2)
	pingUntil(t, e, "felt-dr-e", ipD2)
	e.must(t, "rm", "-f", "felt-dr-d", "felt-dr-e")
	e.must(t, "network", "rm", drNet)
	allGone()
	// The old endpoints went at shutdown, the new ones at rm.
	drCheckLog(t, logPath, since, map[string][]string{
		"/NetworkDriver.Leave":          {epD, epE, epD2, epE2},
		"/NetworkDriver.DeleteEndpoint": {epD, epE, epD2, epE2},
		"/IpamDriver.ReleaseAddress":    {ipD + `\`, ipE + `\`, ipD2 + `\`, ipE2 + `\`},
		"/NetworkDriver.DeleteNetwork":  nil,
	})
}

func drShort(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// drCheckLog reads the plugin's debug log (in dockerd's) from offset since
// on: no call failed; each call in want was made, answered as often as made,
// and made at least once with each of the given strings in its request (an
// address followed by the backslash escaping its closing quote).
func drCheckLog(t testing.TB, path string, since int64, want map[string][]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if since > int64(len(b)) {
		since = 0
	}
	lines := strings.Split(string(b[since:]), "\n")
	for _, l := range lines {
		if strings.Contains(l, "request failed") {
			t.Errorf("a plugin call failed: %s", l)
		}
	}
	for call, args := range want {
		var req, resp int
		found := map[string]bool{}
		for _, l := range lines {
			switch {
			case strings.Contains(l, "msg=request call="+call+" "):
				req++
				for _, a := range args {
					if strings.Contains(l, a) {
						found[a] = true
					}
				}
			case strings.Contains(l, "msg=response call="+call+" "):
				resp++
			}
		}
		if req == 0 || resp != req {
			t.Errorf("%s: %d requests, %d answers in the plugin log", call, req, resp)
		}
		for _, a := range args {
			if !found[a] {
				t.Errorf("%s: no request with %s in the plugin log", call, a)
			}
		}
	}
}

// drDiagnostics logs the engine's containers, the namespace's links and the
// dockerd log's plugin output, warnings and errors.
func drDiagnostics(t testing.TB, e engine, logPath string) {
	out, _ := e.docker("ps", "-a")
	t.Logf("docker ps -a:\n%s", out)
	out, _ = testkit.RunWithin(cmdTimeout, "ip", "-n", drNS, "-o", "link", "show")
	t.Logf("links in %s:\n%s", drNS, out)
	b, _ := os.ReadFile(logPath)
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "plugin=") || strings.Contains(l, "level=error") || strings.Contains(l, "level=warn") || strings.HasPrefix(l, "engine2:") {
			keep = append(keep, l)
		}
	}
	if len(keep) > 100 {
		keep = keep[len(keep)-100:]
	}
	t.Logf("dockerd log (%s), plugin output, warnings and errors:\n%s", logPath, strings.Join(keep, "\n"))
}

// removeDaemonRestartLeftovers removes what this test makes, also after an
// interrupted run: everything lives in its engine and namespace.
func removeDaemonRestartLeftovers(engine2 string) {
	_, _ = testkit.RunWithin(cmdTimeout, engine2, "stop", drNS)
	if _, err := os.Stat(filepath.Join("/run/netns", drNS)); err == nil {
		_, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", drNS)
	}
}
