// Package e2e tests felt as a managed plugin of the real Docker engine:
// docker plugin create/enable, docker network create, docker run, ping.
package e2e

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
)

const (
	plugin = "felt-e2e:latest" // not felt:latest, so a user's own install is left alone
	image  = "busybox:latest"
	label  = "felt-e2e"
)

var stateDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		flag.Parse()
		if flag.Lookup("test.list").Value.String() != "" {
			// go test -list: name the tests, in the order they run,
			// without installing anything.
			return m.Run()
		}
		if reason := unavailable(); reason != "" {
			return testkit.UnavailableMain("e2e", reason)
		}
		gw := exists("network", "inspect", "docker_gwbridge")
		cleanup := func() {
			removeLeftovers()
			if !gw {
				// Docker made it for our containers; leave the host as we found it.
				_, _ = docker("network", "rm", "docker_gwbridge")
			}
		}
		removeLeftovers()
		if err := installPlugin(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: installing the plugin:", err)
			cleanup()
			return 1
		}
		code := m.Run()
		cleanup()
		return code
	}())
}

func unavailable() string {
	if os.Geteuid() != 0 {
		return "needs root"
	}
	if _, err := exec.LookPath("docker"); err != nil {
		return "no docker CLI"
	}
	if out, err := docker("info", "--format", "{{.ServerVersion}}"); err != nil {
		return "docker engine not reachable: " + out
	}
	return ""
}

// docker runs the docker CLI; combined output, trimmed.
func docker(args ...string) (string, error) {
	return testkit.Run(append([]string{"docker"}, args...)...)
}

func exists(args ...string) bool { _, err := docker(args...); return err == nil }

func mustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := docker(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func installPlugin() error {
	top, _ := filepath.Abs("..")
	if out, err := testkit.Run(filepath.Join(top, "scripts/busybox-image.sh"), image); err != nil {
		return fmt.Errorf("busybox image: %v\n%s", err, out)
	}
	dir, err := os.MkdirTemp("", "felt-e2e-plugin")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if out, err := testkit.Run(filepath.Join(top, "scripts/plugin-rootfs.sh"), dir); err != nil {
		return fmt.Errorf("rootfs: %v\n%s", err, out)
	}
	stateDir, err = os.MkdirTemp("", "felt-e2e-state")
	if err != nil {
		return err
	}
	for _, args := range [][]string{
		{"plugin", "create", plugin, dir},
		{"plugin", "set", plugin, "state.source=" + stateDir, "FELT_LOG_LEVEL=debug"},
		{"plugin", "enable", plugin},
	} {
		if out, err := docker(args...); err != nil {
			return fmt.Errorf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// removeLeftovers removes every container, network and plugin the tests
// make (also those of an earlier, interrupted run).
func removeLeftovers() {
	removeLabelled(docker, label, plugin)
	// felt keeps its DNS address on lo when it stops (package names); the
	// plugin of these tests runs in this machine's namespace.
	_, _ = testkit.Run("ip", "addr", "del", "169.254.53.53/32", "dev", "lo", "label", "lo:felt")
	if stateDir != "" {
		_ = os.RemoveAll(stateDir)
	}
}

// removeLabelled removes, through the docker CLI runner docker, the
// containers and networks labelled label and the plugin: what one test
// makes, also when an earlier run was interrupted.
func removeLabelled(docker func(args ...string) (string, error), label, plugin string) {
	if ids, _ := docker("ps", "-aq", "--filter", "label="+label); ids != "" {
		_, _ = docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	if nets, _ := docker("network", "ls", "-q", "--filter", "label="+label); nets != "" {
		_, _ = docker(append([]string{"network", "rm"}, strings.Fields(nets)...)...)
	}
	if _, err := docker("plugin", "inspect", plugin); err == nil {
		_, _ = docker("plugin", "disable", "-f", plugin)
		_, _ = docker("plugin", "rm", "-f", plugin)
	}
}

// network creates a felt network removed at cleanup.
func network(t testing.TB, name string, args ...string) {
	t.Helper()
	all := append([]string{"network", "create", "-d", plugin, "--ipam-driver", plugin, "--label", label}, args...)
	mustDocker(t, append(all, name)...)
	t.Cleanup(func() { _, _ = docker("network", "rm", name) })
}

// container starts a detached busybox container running sleep, with extra
// docker run flags, removed at cleanup; it returns the container's address.
func container(t testing.TB, name, net string, flags ...string) string {
	t.Helper()
	return containerCmd(t, name, net, flags, "sleep", "1d")
}

// containerCmd is container with a command of its own.
func containerCmd(t testing.TB, name, net string, flags []string, cmd ...string) string {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name, "--label", label, "--network", net}, flags...)
	mustDocker(t, append(append(args, image), cmd...)...)
	t.Cleanup(func() { _, _ = docker("rm", "-f", name) })
	return ipOf(t, name, net)
}

func ipOf(t testing.TB, name, net string) string {
	t.Helper()
	return mustDocker(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, net), name)
}

// ping runs a throwaway container on net that pings ip. Not testkit.Ping:
// what is tested is a container Docker started on net, with its own ping.
func ping(net, ip string) (string, error) {
	return docker("run", "--rm", "--label", label, "--network", net, image, "ping", "-c", "1", "-W", "2", ip)
}

func TestSameNetworkPing(t *testing.T) {
	network(t, "felt-blue", "--subnet", "10.42.0.0/16")
	ip := container(t, "felt-a", "felt-blue")
	if !strings.HasPrefix(ip, "10.42.") {
		t.Fatalf("container got %q, not an address of 10.42.0.0/16", ip)
	}
	if out, err := ping("felt-blue", ip); err != nil {
		t.Fatalf("ping %s: %v\n%s", ip, err, out)
	}
	// The container's on-link prefix is this host's /24 of the pool.
	if p := mustDocker(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "felt-blue").IPPrefixLen}}`, "felt-a"); p != "24" {
		t.Fatalf("container prefix length %s, want this host's /24", p)
	}
}

func TestIsolationBetweenNetworks(t *testing.T) {
	network(t, "felt-iso1", "--subnet", "10.51.0.0/16")
	network(t, "felt-iso2", "--subnet", "10.52.0.0/16")
	ip2 := container(t, "felt-iso-b", "felt-iso2")
	if out, err := ping("felt-iso1", ip2); err == nil {
		t.Fatalf("a container of felt-iso1 reached %s on felt-iso2:\n%s", ip2, out)
	}
	if out, err := ping("felt-iso2", ip2); err != nil {
		t.Fatalf("same-network ping failed: %v\n%s", err, out)
	}
}

func TestStaticIP(t *testing.T) {
	network(t, "felt-static", "--subnet", "10.53.0.0/16")
	// This host's subnet, from a first container's address (a /24).
	first := container(t, "felt-static-0", "felt-static")
	base := first[:strings.LastIndex(first, ".")]
	subnet := base + ".0/24"
	want := base + ".77"
	if got := container(t, "felt-static-a", "felt-static", "--ip", want); got != want {
		t.Fatalf("--ip %s gave %s", want, got)
	}
	// An address of the pool outside this host's subnet (the lease is any
	// /24 of the pool, 10.53.250.0/24 too).
	outside := "10.53.250.250"
	if base == "10.53.250" {
		outside = "10.53.251.250"
	}
	out, err := docker("run", "--rm", "--label", label, "--network", "felt-static", "--ip", outside, image, "true")
	// Docker checks --ip against the pool felt returned (this host's subnet)
	// before asking felt, so which of the two refuses depends on the engine
	// version; either way the container must not start.
	if err == nil || !(strings.Contains(out, "outside this host's subnet "+subnet) ||
		strings.Contains(out, "does not belong to any of this network's subnets")) {
		t.Fatalf("--ip outside the host subnet: err=%v\n%s", err, out)
	}
}

// -p publishes through docker_gwbridge, and containers reach the host's
// networks (NAT); an --internal network reaches neither.
func TestOutsideWorld(t *testing.T) {
	network(t, "felt-pub", "--subnet", "10.54.0.0/16")
	network(t, "felt-int", "--internal", "--subnet", "10.55.0.0/16")
	containerCmd(t, "felt-web", "felt-pub", []string{"-p", "18080:80"}, "sh", "-c", "echo hello-felt > /tmp/index.html && httpd -f -p 80 -h /tmp")
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://127.0.0.1:18080/index.html"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if body = string(b); strings.Contains(body, "hello-felt") {
				break
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !strings.Contains(body, "hello-felt") {
		t.Fatalf("-p 18080:80 not reachable from the host (got %q)", body)
	}

	// A server on the host, outside every container network.
	hostIP := hostAddr(t)
	l, err := net.Listen("tcp", hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("outside\n"))
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	dial := func(net string) (string, error) {
		return docker("run", "--rm", "--label", label, "--network", net, image, "nc", "-w", "3", hostIP, fmt.Sprint(port))
	}
	if out, err := dial("felt-pub"); err != nil || !strings.Contains(out, "outside") {
		t.Fatalf("container on a felt network cannot reach %s:%d: %v\n%s", hostIP, port, err, out)
	}
	if out, err := dial("felt-int"); err == nil && strings.Contains(out, "outside") {
		t.Fatalf("container on an --internal felt network reached %s:%d", hostIP, port)
	}
}

// hostAddr is an address of this host on its default-route interface.
func hostAddr(t testing.TB) string {
	out, err := exec.Command("ip", "-4", "-o", "route", "get", "192.0.2.123").Output()
	if err == nil {
		f := strings.Fields(string(out))
		for i := range f {
			if f[i] == "src" && i+1 < len(f) {
				return f[i+1]
			}
		}
	}
	t.Fatalf("no host address found: %v %s", err, out)
	return ""
}

func TestBadInputThroughDocker(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "felt needs --subnet"},
		{[]string{"--subnet", "10.56.0.0/16", "-o", "colour=blue"}, `unknown option "colour"`},
		{[]string{"--subnet", "10.56.0.0/16", "--ipam-opt", "subnet_len=99"}, "subnet_len=99"},
	}
	for _, c := range cases {
		args := append([]string{"network", "create", "-d", plugin, "--ipam-driver", plugin, "--label", label}, c.args...)
		out, err := docker(append(args, "felt-bad")...)
		if err == nil {
			_, _ = docker("network", "rm", "felt-bad")
			t.Fatalf("%v: network created, want error %q", c.args, c.want)
		}
		if !strings.Contains(out, c.want) {
			t.Fatalf("%v: error %q, want it to contain %q", c.args, out, c.want)
		}
	}
	// felt IPAM with Docker's bridge driver: a clear error at container start.
	mustDocker(t, "network", "create", "-d", "bridge", "--ipam-driver", plugin, "--label", label, "--subnet", "10.57.0.0/16", "felt-mixed")
	defer docker("network", "rm", "felt-mixed")
	out, err := docker("run", "--rm", "--label", label, "--network", "felt-mixed", image, "true")
	if err == nil || !strings.Contains(out, "felt's IPAM serves only felt networks") {
		t.Fatalf("bridge driver with felt IPAM: %v\n%s", err, out)
	}
	// felt driver with Docker's default IPAM.
	out, err = docker("network", "create", "-d", plugin, "--label", label, "--subnet", "10.58.0.0/16", "felt-mixed2")
	if err == nil {
		_, _ = docker("network", "rm", "felt-mixed2")
		t.Fatal("felt driver with the default IPAM was accepted")
	}
	if !strings.Contains(out, "needs felt's IPAM") {
		t.Fatalf("felt driver with default IPAM: %s", out)
	}
}

// pluginPID finds the felt process of the machine engine's managed plugin
// (0 if none).
func pluginPID(t testing.TB) int {
	t.Helper()
	return feltPID(mustDocker(t, "plugin", "inspect", "-f", "{{.Id}}", plugin))
}

// feltPID is the felt process of the plugin whose ID is id (0 if none):
// Docker runs a plugin in a cgroup named by its ID, whichever engine it is.
func feltPID(id string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if strings.TrimSpace(string(comm)) != "felt" {
			continue
		}
		if cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup")); err == nil && strings.Contains(string(cg), id) {
			return pid
		}
	}
	return 0
}

// Kill -9 the plugin while containers run: Docker restarts it, the
// containers stay connected, and a new container gets a fresh address.
func TestPluginKilled(t *testing.T) {
	network(t, "felt-kill", "--subnet", "10.59.0.0/16")
	ipA := container(t, "felt-kill-a", "felt-kill")
	ipB := container(t, "felt-kill-b", "felt-kill")
	old := pluginPID(t)
	if old == 0 {
		t.Fatal("plugin process not found")
	}
	testkit.MustRun(t, "kill", "-9", fmt.Sprint(old))
	deadline := time.Now().Add(30 * time.Second)
	for pluginPID(t) == 0 || pluginPID(t) == old {
		if time.Now().After(deadline) {
			t.Fatal("Docker did not restart the killed plugin")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := docker("exec", "felt-kill-a", "ping", "-c", "1", "-W", "2", ipB); err != nil {
		t.Fatalf("containers lost connectivity after the plugin restart: %v\n%s", err, out)
	}
	ipC := container(t, "felt-kill-c", "felt-kill")
	if ipC == ipA || ipC == ipB {
		t.Fatalf("new container got %s, already in use", ipC)
	}
	if out, err := docker("exec", "felt-kill-c", "ping", "-c", "1", "-W", "2", ipA); err != nil {
		t.Fatalf("new container cannot reach an old one: %v\n%s", err, out)
	}
	// Stopping a container from before the restart works.
	mustDocker(t, "rm", "-f", "felt-kill-b")
}
