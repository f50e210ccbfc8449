package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
)

// TestTwoEngines's hosts, names and addresses.
const (
	plugin2     = "felt-2e:latest" // not felt:latest nor felt-e2e:latest: other tests and users have those
	label2      = "felt-2e"
	ns2         = "felt-2e-h2" // the second engine's host (at most 14 characters: engine2.sh)
	vethMain    = "f2e-h1"     // in the root namespace
	vethNS2     = "f2e-h2"     // in ns2
	ipMain      = "192.168.88.1"
	ipNS2       = "192.168.88.2"
	pool2       = "10.62.0.0/16"
	vni2        = 4062 // explicit: other felt networks on this machine take the low ones
	net2        = "felt-2e-net"
	poolUDP2    = "10.63.0.0/16"
	netUDP2     = "felt-2e-udp"
	cmdTimeout  = 90 * time.Second // any single command (testkit.RunWithin); dockerd's own start is bounded by engine2.sh
	pingTimeout = 30 * time.Second
)

// engine is one Docker engine; host "" is the main one (the CLI's default).
type engine struct{ name, host string }

func (e engine) docker(args ...string) (string, error) {
	if e.host != "" {
		args = append([]string{"-H", e.host}, args...)
	}
	return testkit.RunWithin(cmdTimeout, append([]string{"docker"}, args...)...)
}

func (e engine) must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := e.docker(args...)
	if err != nil {
		t.Fatalf("%s engine: docker %s: %v\n%s", e.name, strings.Join(args, " "), err, out)
	}
	return out
}

// TestTwoEngines: two real Docker engines on one machine, the main one and a
// second dockerd in the network namespace "felt-2e-h2" (scripts/engine2.sh
// starts it with a containerd of its own there, so its managed plugin runs in
// that namespace). A veth joins the two "hosts" and Consul listens on the
// main end; felt is installed in both engines, the same network created on
// both, and containers on the two engines ping each other across the vxlan
// overlay, each host holding its own /24 lease in Consul.
func TestTwoEngines(t *testing.T) {
	testkit.NeedCommands(t, "dockerd", "containerd", "runc", "nsenter", "unshare", "ip", "bash")
	consul.Binary(t) // skips (fails with CI=true) without bin/consul
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	engine2 := filepath.Join(top, "scripts", "engine2.sh")
	host1 := engine{name: "main"}

	removeTwoEnginesLeftovers(engine2)
	t.Cleanup(func() { removeTwoEnginesLeftovers(engine2) }) // runs last: a safety net

	// A second felt in the root namespace would take the links and FELT
	// rules of another felt's networks for its own orphans and remove them.
	if out, _ := testkit.RunWithin(cmdTimeout, "ip", "-o", "link", "show"); strings.Contains(out, "alias felt:net:") {
		var br []string
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "alias felt:net:") {
				br = append(br, strings.Fields(l)[1])
			}
		}
		testkit.Unavailable(t, "the root namespace holds another felt plugin's networks (bridges %s): a second felt here would remove them; remove those networks first", strings.Join(br, " "))
	}

	gw := exists("network", "inspect", "docker_gwbridge")
	t.Cleanup(func() {
		if !gw {
			// Docker made it for our container; leave the host as we found it.
			_, _ = host1.docker("network", "rm", "docker_gwbridge")
		}
	})

	// The second host: a namespace, a veth to the root namespace, a default
	// route through it (as a host's to its gateway).
	testkit.MustRun(t, "ip", "netns", "add", ns2)
	t.Cleanup(func() { _, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", ns2) })
	testkit.MustRun(t, "ip", "link", "add", vethMain, "type", "veth", "peer", "name", vethNS2, "netns", ns2)
	t.Cleanup(func() { _, _ = testkit.RunWithin(cmdTimeout, "ip", "link", "del", vethMain) })
	testkit.MustRun(t, "ip", "addr", "add", ipMain+"/24", "dev", vethMain)
	testkit.MustRun(t, "ip", "link", "set", vethMain, "up")
	testkit.MustRun(t, "ip", "-n", ns2, "link", "set", "lo", "up")
	testkit.MustRun(t, "ip", "-n", ns2, "addr", "add", ipNS2+"/24", "dev", vethNS2)
	testkit.MustRun(t, "ip", "-n", ns2, "link", "set", vethNS2, "up")
	testkit.MustRun(t, "ip", "-n", ns2, "route", "add", "default", "via", ipMain)

	agent := consul.Start(t, consul.Options{Bind: ipMain, Client: ipMain})

	// The second engine.
	start := time.Now()
	host2, err := testkit.RunWithin(cmdTimeout, engine2, "start", ns2)
	t.Cleanup(func() {
		if out, err := testkit.RunWithin(cmdTimeout, engine2, "stop", ns2); err != nil {
			t.Errorf("stopping the second engine: %v\n%s", err, out)
		}
	})
	if err != nil {
		t.Fatalf("starting the second engine in %s: %v\n%s", ns2, err, host2)
	}
	host2 = lastLine(host2)
	t.Logf("second engine %s in namespace %s, ready in %s", host2, ns2, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { // runs before the engine stops
		if t.Failed() {
			logDiagnostics(t, engine2)
		}
	})
	second := engine{name: "second", host: host2}
	if out, err := testkit.RunWithin(cmdTimeout, "bash", "-o", "pipefail", "-c", fmt.Sprintf("docker save %s | docker -H %s load -q", image, host2)); err != nil {
		t.Fatalf("loading %s into the second engine: %v\n%s", image, err, out)
	}

	// The plugin in both engines, each with its own state and underlay.
	dir := t.TempDir()
	if out, err := testkit.RunWithin(cmdTimeout, filepath.Join(top, "scripts", "plugin-rootfs.sh"), dir); err != nil {
		t.Fatalf("plugin rootfs: %v\n%s", err, out)
	}
	for _, x := range []struct {
		e     engine
		iface string
	}{{host1, vethMain}, {second, vethNS2}} {
		state := t.TempDir()
		x.e.must(t, "plugin", "create", plugin2, dir)
		t.Cleanup(func() {
			_, _ = x.e.docker("plugin", "disable", "-f", plugin2)
			_, _ = x.e.docker("plugin", "rm", "-f", plugin2)
		})
		x.e.must(t, "plugin", "set", plugin2, "state.source="+state, "CONSUL_HTTP_ADDR="+agent.Addr,
			"FELT_IFACE="+x.iface, "FELT_LOG_LEVEL=debug")
		x.e.must(t, "plugin", "enable", plugin2)
	}

	// The same network on both, a container on each.
	ips := map[string]string{}
	for _, e := range []engine{host1, second} {
		e.must(t, "network", "create", "-d", plugin2, "--ipam-driver", plugin2, "--label", label2,
			"--subnet", pool2, "-o", fmt.Sprintf("vni=%d", vni2), net2)
		t.Cleanup(func() { _, _ = e.docker("network", "rm", net2) })
		name := "felt-2e-" + e.name
		e.must(t, "run", "-d", "--name", name, "--label", label2, "--network", net2, image, "sleep", "1d")
		t.Cleanup(func() { _, _ = e.docker("rm", "-f", name) })
		ips[e.name] = e.must(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, net2), name)
		if plen := e.must(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPPrefixLen}}`, net2), name); plen != "24" {
			t.Fatalf("%s engine: container prefix length %s, want the host's /24", e.name, plen)
		}
	}
	addrMain, errMain := netip.ParseAddr(ips["main"])
	addrSecond, errSecond := netip.ParseAddr(ips["second"])
	if errMain != nil || errSecond != nil {
		t.Fatalf("container addresses %q, %q", ips["main"], ips["second"])
	}
	subMain, _ := addrMain.Prefix(24)
	subSecond, _ := addrSecond.Prefix(24)
	t.Logf("main engine: container %s in %s; second engine: container %s in %s", addrMain, subMain, addrSecond, subSecond)
	if p := netip.MustParsePrefix(pool2); !p.Contains(addrMain) || !p.Contains(addrSecond) {
		t.Fatalf("container addresses %s, %s not both in %s", addrMain, addrSecond, pool2)
	}
	if subMain == subSecond {
		t.Fatalf("both hosts got %s: want different /24s of %s", subMain, pool2)
	}

	// Across the hosts, both ways.
	pingUntil(t, host1, "felt-2e-main", addrSecond.String())
	pingUntil(t, second, "felt-2e-second", addrMain.String())

	// What made it work: the two leases in Consul, and each host's route to
	// the other's subnet through the VTEP.
	leases := consulLeases(t, agent)
	byIP := map[netip.Addr]netip.Prefix{}
	for _, l := range leases {
		byIP[l.PublicIP] = l.Subnet
	}
	if len(leases) != 2 || byIP[netip.MustParseAddr(ipMain)] != subMain || byIP[netip.MustParseAddr(ipNS2)] != subSecond {
		t.Fatalf("leases in Consul %+v: want %s held by %s and %s by %s", leases, subMain, ipMain, subSecond, ipNS2)
	}
	vtep := fmt.Sprintf("felt.%d", vni2)
	if out := testkit.MustRun(t, "ip", "route", "show", subSecond.String()); !strings.Contains(out, "dev "+vtep) {
		t.Fatalf("root namespace: route to %s is %q, want one through %s", subSecond, out, vtep)
	}
	if out := testkit.MustRun(t, "ip", "-n", ns2, "route", "show", subMain.String()); !strings.Contains(out, "dev "+vtep) {
		t.Fatalf("%s: route to %s is %q, want one through %s", ns2, subMain, out, vtep)
	}

	t.Run("udp backend", func(t *testing.T) { testTwoEnginesUDP(t, host1, second) })
}

// testTwoEnginesUDP does the same with -o backend=udp: the TUN is created
// inside the managed plugin (config.json gives it /dev/net/tun), and 8 MB
// over HTTP arrive intact, which cross as TCP super-packets cut into frames.
func testTwoEnginesUDP(t *testing.T, host1, second engine) {
	addr := map[string]netip.Addr{}
	for _, e := range []engine{host1, second} {
		e.must(t, "network", "create", "-d", plugin2, "--ipam-driver", plugin2, "--label", label2,
			"--subnet", poolUDP2, "-o", "backend=udp", netUDP2)
		t.Cleanup(func() { _, _ = e.docker("network", "rm", netUDP2) })
		name := "felt-2e-udp-" + e.name
		e.must(t, "run", "-d", "--name", name, "--label", label2, "--network", netUDP2, image, "sleep", "1d")
		t.Cleanup(func() { _, _ = e.docker("rm", "-f", name) })
		ip := e.must(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, netUDP2), name)
		a, err := netip.ParseAddr(ip)
		if err != nil || !netip.MustParsePrefix(poolUDP2).Contains(a) {
			t.Fatalf("%s engine: container address %q, want one in %s", e.name, ip, poolUDP2)
		}
		addr[e.name] = a
	}
	pingUntil(t, host1, "felt-2e-udp-main", addr["second"].String())
	pingUntil(t, second, "felt-2e-udp-second", addr["main"].String())
	sub, _ := addr["second"].Prefix(24)
	if out := testkit.MustRun(t, "ip", "route", "show", sub.String()); !strings.Contains(out, "dev feltu.") {
		t.Fatalf("root namespace: route to %s is %q, want one through the udp backend's TUN (feltu.…)", sub, out)
	}

	sum := second.must(t, "exec", "felt-2e-udp-second", "sh", "-c",
		"mkdir -p /www && dd if=/dev/urandom of=/www/f bs=1M count=8 2>/dev/null && httpd -p 8080 -h /www && md5sum /www/f")
	got := host1.must(t, "exec", "felt-2e-udp-main", "sh", "-c",
		fmt.Sprintf("wget -q -O - http://%s:8080/f | md5sum", addr["second"]))
	if f, g := strings.Fields(sum), strings.Fields(got); len(f) == 0 || len(g) == 0 || f[0] != g[0] {
		t.Fatalf("8 MB over HTTP across the udp backend: md5 %q at the server, %q received", sum, got)
	}
}

// pingUntil pings to from container ctr on engine e until it answers, for
// up to pingTimeout (the overlay's routes may still be on their way).
func pingUntil(t *testing.T, e engine, ctr, to string) {
	t.Helper()
	deadline := time.Now().Add(pingTimeout)
	for {
		out, err := e.docker("exec", ctr, "ping", "-c", "1", "-W", "1", to)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s on the %s engine cannot ping %s: %v\n%s", ctr, e.name, to, err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// consulLeases reads the pool's leases from Consul directly.
func consulLeases(t testing.TB, agent *consul.Agent) []lease.Lease {
	t.Helper()
	s, err := consulkv.New(agent.APIConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ls, err := lease.NewRegistry(s, "felt/", nil).Leases(ctx, netip.MustParsePrefix(pool2))
	if err != nil {
		t.Fatalf("leases in Consul: %v", err)
	}
	return ls
}

// removeTwoEnginesLeftovers removes what this test makes, also after an
// interrupted run: the main engine's containers, network and plugin, the
// second engine (and whatever of it outlived a crash), the namespace, the veth.
func removeTwoEnginesLeftovers(engine2 string) {
	removeLabelled(engine{name: "main"}.docker, label2, plugin2)
	_, _ = testkit.RunWithin(cmdTimeout, engine2, "stop", ns2)
	if _, err := os.Stat(filepath.Join("/run/netns", ns2)); err == nil {
		_, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", ns2)
	}
	if _, err := testkit.RunWithin(cmdTimeout, "ip", "link", "show", vethMain); err == nil {
		_, _ = testkit.RunWithin(cmdTimeout, "ip", "link", "del", vethMain)
	}
}

// logDiagnostics logs what helps understand a failure: the second engine's
// log (its plugin's output included) and both hosts' overlay state.
func logDiagnostics(t testing.TB, engine2 string) {
	// Its plugin's output, warnings and errors; not containerd's chatter.
	log, _ := testkit.RunWithin(cmdTimeout, engine2, "log", ns2, "2000")
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "plugin=") || strings.Contains(l, "level=error") || strings.Contains(l, "level=warn") {
			keep = append(keep, l)
		}
	}
	if len(keep) > 80 {
		keep = keep[len(keep)-80:]
	}
	t.Logf("second engine's dockerd log (/tmp/felt-engine-%s/dockerd.log), plugin output, warnings and errors:\n%s", ns2, strings.Join(keep, "\n"))
	vtep := fmt.Sprintf("felt.%d", vni2)
	for _, c := range [][]string{
		{"ip", "route"}, {"ip", "-n", ns2, "route"},
		{"ip", "neigh", "show", "dev", vtep}, {"ip", "-n", ns2, "neigh", "show", "dev", vtep},
		{"bridge", "fdb", "show", "dev", vtep}, {"bridge", "-n", ns2, "fdb", "show", "dev", vtep},
	} {
		out, _ := testkit.RunWithin(cmdTimeout, c...)
		t.Logf("%s:\n%s", strings.Join(c, " "), out)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
