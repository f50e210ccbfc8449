package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/testkit"
)

// TestNames: container names across hosts (issue 11) on the cluster
// harness (h1 Docker 20.10, h2 26, h3 29, one Consul), each engine with
// the README's one-time setting, daemon.json {"dns":["169.254.53.53"]}.
// felt forwards what it does not serve to a test DNS server on the
// underlay (FELT_DNS_UPSTREAM), never to a real one.
//
//	go test -run TestNames ./e2e/   (root, Docker; under flock /tmp/felt-docker.lock)
func TestNames(t *testing.T) {
	t.Setenv("ENGINE2_DAEMON_JSON", `{"dns":["169.254.53.53"]}`) // scripts/engine2.sh writes it
	c := clSetup(t)
	h1, h2, h3 := c.h(1), c.h(2), c.h(3)
	t.Logf("hosts: %s", strings.Join([]string{h1.e.name, h2.e.name, h3.e.name}, ", "))
	queries := nmDNSServer(t, clUL, clULAddr)
	// h3 forwards through the resolv.conf path to a local stub, as on a
	// host with systemd-resolved: its engine's (and so its plugin's)
	// /etc/resolv.conf names 127.0.0.53, where a test server listens in
	// h3's namespace.
	stubQueries := nmDNSServer(t, h3.ns, "127.0.0.53")
	stub := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(stub, []byte("nameserver 127.0.0.53\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testkit.MustRun(t, "nsenter", "--mount=/run/felt-engines/"+h3.ns+".mnt", "mount", "--bind", stub, "/etc/resolv.conf")
	for _, h := range c.hosts {
		set := []string{"FELT_DNS_UPSTREAM=" + clULAddr}
		if h == h3 {
			set = []string{"FELT_LEASE_TTL=" + nmLeaseTTL.String()} // the killed host, the stub
		}
		h.e.must(t, "plugin", "disable", clPlugin)
		h.e.must(t, append([]string{"plugin", "set", clPlugin}, set...)...)
		h.e.must(t, "plugin", "enable", clPlugin)
	}

	const blue, bluePool, red, redPool = "nm-blue", "10.94.0.0/16", "nm-red", "10.95.0.0/16"
	waitNet(t, clConverge, h1.create(t, blue, bluePool), bluePool, h2, h3)
	waitNet(t, clConverge, h1.create(t, red, redPool), redPool, h2, h3)

	// Clients first: what they resolve is timed from the servers' start.
	cli1 := nmRun(t, h1, "nm-cli", blue)
	cli3 := nmRun(t, h3, "nm-cli", blue)
	redCli := nmRun(t, h1, "nm-red-cli", red)
	// A container on both networks: the DNS route on one endpoint only
	// (a second one would fail its start).
	h1.e.must(t, "create", "--name", "nm-both", "--label", clLabel, "--network", red, image, "sleep", "1d")
	h1.e.must(t, "network", "connect", blue, "nm-both")
	h1.e.must(t, "start", "nm-both")
	both := nmCtr{h1, "nm-both"}

	t.Run("ping and wget web across hosts", func(t *testing.T) {
		start := time.Now()
		h2.e.must(t, "run", "-d", "--name", "web", "--label", clLabel, "--network", blue, "--network-alias", "api", image,
			"sh", "-c", "mkdir -p /www && echo hello-from-h2 > /www/index.html && exec httpd -f -p 80 -h /www")
		webIP := nmIP(t, h2, "web", blue)
		got := cli1.waitResolve(t, "web", 2*time.Second, start)
		if !slices.Equal(got, []string{webIP}) {
			t.Fatalf("h1: web resolves to %v, want [%s]", got, webIP)
		}
		cli1.must(t, "ping", "-c1", "-W2", "web")
		if out := cli1.must(t, "wget", "-qO-", "http://web/"); strings.TrimSpace(out) != "hello-from-h2" {
			t.Fatalf("h1: wget http://web/ gave %q", out)
		}
		if out := cli3.must(t, "wget", "-qO-", "http://web/"); strings.TrimSpace(out) != "hello-from-h2" {
			t.Fatalf("h3 (Docker %s): wget http://web/ gave %q", h3.version, out)
		}
		// The address resolves back to the name, as Docker answers for a
		// local container: "web.nm-blue" (busybox prints "name = ...").
		for _, cli := range []nmCtr{cli1, cli3} {
			out, _ := cli.h.e.docker("exec", cli.name, "nslookup", webIP)
			if !strings.Contains(out, "name = web."+blue) {
				t.Errorf("%s on %s (Docker %s): %s does not resolve back to web.%s:\n%s", cli.name, cli.h.name, cli.h.version, webIP, blue, out)
			}
		}
		short := h2.e.must(t, "inspect", "-f", "{{.Id}}", "web")[:12]
		if got := cli1.resolve(t, short); !slices.Equal(got, []string{webIP}) {
			t.Errorf("h1: web's short ID %s resolves to %v", short, got)
		}
	})

	t.Run("alias round robin across hosts", func(t *testing.T) {
		start := time.Now()
		h3.e.must(t, "run", "-d", "--name", "api3", "--label", clLabel, "--network", blue, "--network-alias", "api", image, "sleep", "1d")
		want := []string{nmIP(t, h2, "web", blue), nmIP(t, h3, "api3", blue)}
		slices.Sort(want)
		deadline := start.Add(2 * time.Second)
		for {
			got := cli1.lookup(t, "api")
			if slices.Equal(got, want) {
				t.Logf("h1: api → %v within %s", got, time.Since(start).Round(10*time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("h1: api resolves to %v, want both hosts' %v", got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("repeated lookups all answered", func(t *testing.T) { nmRepeated(t, cli1, h2, blue) })

	t.Run("names scoped per network", func(t *testing.T) {
		if got := redCli.lookup(t, "web"); len(got) != 0 {
			t.Fatalf("a container on %s resolves %s's web: %v", red, blue, got)
		}
		if got := both.lookup(t, "web"); !slices.Equal(got, []string{nmIP(t, h2, "web", blue)}) {
			t.Fatalf("a container on both networks resolves web to %v", got)
		}
		if out := h1.e.must(t, "exec", "nm-both", "ip", "route"); strings.Count(out, "169.254.53.53") != 1 {
			t.Fatalf("nm-both: want one route to 169.254.53.53:\n%s", out)
		}
	})

	t.Run("external names forwarded", func(t *testing.T) {
		for _, x := range []struct {
			ctr     nmCtr
			queries *atomic.Int64
		}{{cli1, queries}, {redCli, queries}, {cli3, stubQueries}} {
			before := x.queries.Load()
			if got := x.ctr.lookup(t, "ext.felt.test"); !slices.Equal(got, []string{"192.0.2.80"}) {
				t.Fatalf("%s on %s: ext.felt.test resolves to %v, want [192.0.2.80]", x.ctr.name, x.ctr.h.name, got)
			}
			if x.queries.Load() == before {
				t.Fatalf("%s on %s: its upstream saw no query", x.ctr.name, x.ctr.h.name)
			}
		}
	})

	t.Run("internal network", func(t *testing.T) {
		const internal, pool = "nm-int", "10.96.0.0/16"
		waitNet(t, clConverge, h1.create(t, internal, pool, "--internal"), pool, h2)
		cli := nmRun(t, h1, "nm-int-cli", internal)
		start := time.Now()
		h2.e.must(t, "run", "-d", "--name", "nm-int-srv", "--label", clLabel, "--network", internal, image, "sleep", "1d")
		if got, want := cli.waitResolve(t, "nm-int-srv", 2*time.Second, start), nmIP(t, h2, "nm-int-srv", internal); !slices.Equal(got, []string{want}) {
			t.Fatalf("h1: nm-int-srv resolves to %v, want [%s]", got, want)
		}
		// No way out through felt: an internal-only container's other
		// names are refused, not forwarded (Docker 26 answers the client
		// at once; 20.10 would wait for its own timeout).
		cli2 := nmRun(t, h2, "nm-int-cli2", internal)
		before := queries.Load()
		if got := cli2.lookup(t, "ext.felt.test"); len(got) != 0 || queries.Load() != before {
			t.Fatalf("h2: an internal-only container resolved ext.felt.test to %v (%d forwards)", got, queries.Load()-before)
		}
	})

	t.Run("disconnect and rename", func(t *testing.T) {
		h2.e.must(t, "run", "-d", "--name", "nm-dc", "--label", clLabel, "--network", red, image, "sleep", "1d")
		start := time.Now()
		h2.e.must(t, "network", "connect", blue, "nm-dc")
		cli1.waitResolve(t, "nm-dc", 2*time.Second, start)
		start = time.Now()
		h2.e.must(t, "network", "disconnect", blue, "nm-dc")
		cli1.waitGone(t, "nm-dc", 2*time.Second, start)
		if got := redCli.lookup(t, "nm-dc"); len(got) != 1 {
			t.Fatalf("nm-dc on %s after its disconnect from %s: %v", red, blue, got)
		}
		start = time.Now()
		h2.e.must(t, "rename", "nm-dc", "nm-dc2")
		redCli.waitResolve(t, "nm-dc2", 2*time.Second, start)
		redCli.waitGone(t, "nm-dc", 2*time.Second, start)
	})

	t.Run("compose projects split over two hosts", func(t *testing.T) {
		nmCompose(t, h1, "nma", "db", blue, "mkdir -p /www && echo hello-db > /www/index.html && exec httpd -f -p 80 -h /www")
		start := time.Now()
		nmCompose(t, h2, "nmb", "app", blue, "exec sleep 1d")
		app := nmCtr{h2, "nmb_app_1"}
		if got, want := app.waitResolve(t, "db", 2*time.Second, start), nmIP(t, h1, "nma_db_1", blue); !slices.Equal(got, []string{want}) {
			t.Fatalf("h2: db resolves to %v, want [%s]", got, want)
		}
		if out := app.must(t, "wget", "-qO-", "http://db/"); strings.TrimSpace(out) != "hello-db" {
			t.Fatalf("h2: wget http://db/ gave %q", out)
		}
		db := nmCtr{h1, "nma_db_1"}
		if got, want := db.waitResolve(t, "app", 2*time.Second, start), nmIP(t, h2, "nmb_app_1", blue); !slices.Equal(got, []string{want}) {
			t.Fatalf("h1: app resolves to %v, want [%s]", got, want)
		}
	})

	t.Run("stopped container's name gone", func(t *testing.T) {
		start := time.Now()
		h2.e.must(t, "stop", "-t", "1", "web")
		stopped := time.Now()
		deadline := stopped.Add(2 * time.Second)
		for {
			got := cli1.lookup(t, "web")
			if len(got) == 0 {
				t.Logf("h1: web gone %s after docker stop returned (stop took %s)", time.Since(stopped).Round(10*time.Millisecond), stopped.Sub(start).Round(10*time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("h1: web still resolves to %v 2 s after docker stop", got)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The alias keeps h3's address only.
		if got := cli1.lookup(t, "api"); !slices.Equal(got, []string{nmIP(t, h3, "api3", blue)}) {
			t.Fatalf("h1: api resolves to %v after web stopped", got)
		}
	})

	t.Run("killed host's names gone with its lease", func(t *testing.T) { nmKilledHost(t, c, cli1) })
}

// nmLeaseTTL is h3's lease TTL: its names must go this long after it dies.
const nmLeaseTTL = 15 * time.Second

// nmKilledHost: h3 is cut off (its underlay link down: no renewal, no
// release, as a dead host): its names go when its lease expires.
func nmKilledHost(t *testing.T, c *clCluster, cli nmCtr) {
	h3 := c.h(3)
	if got := cli.lookup(t, "api3"); len(got) != 1 {
		t.Fatalf("api3 does not resolve before h3 dies: %v", got)
	}
	testkit.MustRun(t, "ip", "-n", h3.ns, "link", "set", clHostIF, "down")
	killed := time.Now()
	limit := nmLeaseTTL + 2*time.Second
	for {
		got := cli.lookup(t, "api3")
		if len(got) == 0 {
			t.Logf("h1: api3 gone %s after h3 was cut off (lease TTL %s)", time.Since(killed).Round(100*time.Millisecond), nmLeaseTTL)
			return
		}
		if time.Since(killed) > limit {
			t.Fatalf("h1: api3 still resolves to %v %s after h3 was cut off (lease TTL %s)", got, limit, nmLeaseTTL)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// nmCompose starts a compose project of one service on h, attached to
// the external felt network net.
func nmCompose(t *testing.T, h *clHost, project, service, net, cmd string) {
	t.Helper()
	testkit.NeedCommands(t, "docker-compose")
	dir := t.TempDir()
	yml := fmt.Sprintf("version: \"2.4\"\nservices:\n  %s:\n    image: %s\n    command: [\"sh\", \"-c\", %q]\n    labels: [%s]\nnetworks:\n  default:\n    external: true\n    name: %s\n",
		service, image, cmd, clLabel, net)
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	run := exec.Command("docker-compose", "-p", project, "up", "-d")
	run.Dir = dir
	run.Env = append(os.Environ(), "DOCKER_HOST="+h.e.host)
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("%s: docker-compose -p %s up: %v\n%s", h.name, project, err, out)
	}
}

// nmRepeated: lookups in a row through Docker's resolver (127.0.0.11)
// from a socket in cli's network namespace, each answered with the right
// address: a cross-host name (web on net: Docker → felt → index), a local
// name (Docker alone) and an external name (Docker → felt → the test
// upstream). Their latency is measured by make bench (bench/names_test.go),
// not here: timings belong in benchmarks.
func nmRepeated(t *testing.T, cli nmCtr, web *clHost, net string) {
	pid := cli.h.e.must(t, "inspect", "-f", "{{.State.Pid}}", cli.name)
	ns, err := netns.GetFromPath("/proc/" + pid + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var conn *dns.Conn
	if err := nsutil.Do(ns, func() (err error) {
		conn, err = dns.Dial("udp", "127.0.0.11:53")
		return err
	}); err != nil {
		t.Fatalf("a socket in %s's namespace: %v", cli.name, err)
	}
	defer conn.Close()
	want := map[string]string{"web": nmIP(t, web, "web", net), cli.name: nmIP(t, cli.h, cli.name, net), "ext.felt.test": "192.0.2.80"}
	const n = 50
	for i := range n {
		for _, name := range []string{"web", cli.name, "ext.felt.test"} {
			m := new(dns.Msg)
			m.SetQuestion(name+".", dns.TypeA)
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if err := conn.WriteMsg(m); err != nil {
				t.Fatal(err)
			}
			r, err := conn.ReadMsg()
			if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("lookup %d of %s from %s on %s: %v %v", i, name, cli.name, cli.h.name, err, r)
			}
			if a, ok := r.Answer[0].(*dns.A); !ok || a.A.String() != want[name] {
				t.Fatalf("lookup %d of %s from %s on %s: %v, want %s", i, name, cli.name, cli.h.name, r.Answer[0], want[name])
			}
		}
	}
}

// nmCtr is a client container.
type nmCtr struct {
	h    *clHost
	name string
}

func nmRun(t *testing.T, h *clHost, name, net string) nmCtr {
	t.Helper()
	h.e.must(t, "run", "-d", "--name", name, "--label", clLabel, "--network", net, image, "sleep", "1d")
	return nmCtr{h, name}
}

func nmIP(t *testing.T, h *clHost, name, net string) string {
	t.Helper()
	return h.e.must(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, net), name)
}

func (c nmCtr) must(t *testing.T, args ...string) string {
	t.Helper()
	return c.h.e.must(t, append([]string{"exec", c.name}, args...)...)
}

// lookup resolves name through the container's resolver (Docker's
// 127.0.0.11, which forwards to felt): its IPv4 addresses, sorted; none
// if the name does not resolve.
func (c nmCtr) lookup(t *testing.T, name string) []string {
	t.Helper()
	out, _ := c.h.e.docker("exec", c.name, "nslookup", "-type=a", name)
	var ips []string
	seenName := false
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "Name:") {
			seenName = true
		}
		if a, ok := strings.CutPrefix(l, "Address:"); ok && seenName {
			a = strings.TrimSpace(a)
			if ip, err := netip.ParseAddr(strings.Fields(a)[0]); err == nil && ip.Is4() {
				ips = append(ips, ip.String())
			}
		}
	}
	slices.Sort(ips)
	return slices.Compact(ips)
}

func (c nmCtr) resolve(t *testing.T, name string) []string {
	t.Helper()
	got := c.lookup(t, name)
	if len(got) == 0 {
		out, _ := c.h.e.docker("exec", c.name, "nslookup", name)
		t.Fatalf("%s on %s: %s does not resolve:\n%s", c.name, c.h.name, name, out)
	}
	return got
}

// waitResolve polls until name resolves, at most limit after start.
func (c nmCtr) waitResolve(t *testing.T, name string, limit time.Duration, start time.Time) []string {
	t.Helper()
	for {
		if got := c.lookup(t, name); len(got) > 0 {
			t.Logf("%s on %s: %s → %v within %s of its start", c.name, c.h.name, name, got, time.Since(start).Round(10*time.Millisecond))
			return got
		}
		if time.Since(start) > limit {
			out, _ := c.h.e.docker("exec", c.name, "nslookup", name)
			t.Fatalf("%s on %s: %s not resolvable within %s:\n%s", c.name, c.h.name, name, limit, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitGone polls until name no longer resolves, at most limit after start.
func (c nmCtr) waitGone(t *testing.T, name string, limit time.Duration, start time.Time) {
	t.Helper()
	for {
		got := c.lookup(t, name)
		if len(got) == 0 {
			t.Logf("%s on %s: %s gone within %s", c.name, c.h.name, name, time.Since(start).Round(10*time.Millisecond))
			return
		}
		if time.Since(start) > limit {
			t.Fatalf("%s on %s: %s still resolves to %v after %s", c.name, c.h.name, name, got, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nmDNSServer is a DNS server at addr:53 in network namespace ns:
// ext.felt.test A 192.0.2.80, NXDOMAIN for everything else. It counts
// queries.
func nmDNSServer(t *testing.T, nsName, addr string) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; strings.EqualFold(q.Name, "ext.felt.test.") && q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR("ext.felt.test. 60 IN A 192.0.2.80")
			m.Answer = append(m.Answer, rr)
		} else if !strings.EqualFold(q.Name, "ext.felt.test.") {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var pc net.PacketConn
	var l net.Listener
	err = nsutil.Do(ns, func() (err error) {
		if pc, err = net.ListenPacket("udp4", addr+":53"); err != nil {
			return err
		}
		l, err = net.Listen("tcp4", addr+":53")
		return err
	})
	if err != nil {
		t.Fatalf("test DNS server in %s: %v", nsName, err)
	}
	su, st := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: l, Handler: h}
	started := make(chan struct{}, 2)
	su.NotifyStartedFunc = func() { started <- struct{}{} }
	st.NotifyStartedFunc = func() { started <- struct{}{} }
	go func() { _ = su.ActivateAndServe() }()
	go func() { _ = st.ActivateAndServe() }()
	<-started
	<-started
	t.Cleanup(func() { _ = su.Shutdown(); _ = st.Shutdown() })
	return &n
}
