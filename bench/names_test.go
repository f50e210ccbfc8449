package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
)

// The names part (issue 11): two Docker engines, each in a network
// namespace of its own (scripts/engine2.sh, as e2e's cluster harness runs
// them) with the README's one-time setting daemon.json {"dns":
// ["169.254.53.53"]}, felt installed in each as a managed plugin, one
// Consul and a DNS server on the underlay. Names and addresses are this
// part's own, so it cannot meet an e2e cluster's leftovers (felt-cl-*,
// 192.168.94.0/24) or another part's pools.
const (
	namesPlugin   = "felt-bn:latest"
	namesLabel    = "felt-bn"
	namesUL       = "felt-bn-ul" // at most 14 characters, as engine2.sh's namespaces
	namesNSStart  = "felt-bn-h"
	namesBridge   = "fbn-br"
	namesULAddr   = "192.168.96.1"
	namesHostIF   = "ul0"
	namesNet      = "felt-bn-net"
	namesPool     = "10.97.0.0/16"
	namesExternal = "ext.felt-bench.test"
	namesExtAddr  = "192.0.2.80" // TEST-NET-1: what the underlay's DNS server answers for namesExternal
	namesLookups  = 500
	namesWarmup   = 50
	// namesConverge bounds the network's appearance on host 2 and web's
	// name on host 1: both take about a second; more is a broken setup,
	// not a slow one.
	namesConverge = 30 * time.Second
	namesCmd      = 2 * time.Minute // any one command (docker, engine2.sh)
)

// NameLookups is the latency of a container's name lookups through
// Docker's resolver (127.0.0.11) on a felt network, for a name on another
// host (Docker forwards it to felt, which answers from its index), a name
// on the same host (Docker answers alone: the baseline) and an external
// name (Docker → felt → an upstream DNS server on the underlay).
type NameLookups struct {
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	Engine    string `json:"engine,omitempty"`
	Lookups   int    `json:"lookups_each"`
	CrossHost Dist   `json:"cross_host_name"`
	Local     Dist   `json:"local_name"`
	External  Dist   `json:"external_name"`
	// Ratios of p50s to the local name's (higher is slower).
	CrossHostRatio float64 `json:"cross_host_p50_ratio_to_local"`
	ExternalRatio  float64 `json:"external_p50_ratio_to_local"`
}

// namesHost is one Docker engine in its own network namespace.
type namesHost struct {
	name  string // host 1
	ns    string // felt-bn-h1
	addr  string // underlay address
	host  string // its DOCKER_HOST
	state string // its plugin's state.source
}

func (h *namesHost) docker(args ...string) (string, error) {
	out, err := testkit.RunWithin(namesCmd, append([]string{"docker", "-H", h.host}, args...)...)
	if err != nil {
		return out, fmt.Errorf("%s: docker %s: %w: %s", h.name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

func (h *namesHost) must(s *scope, args ...string) string {
	out, err := h.docker(args...)
	if err != nil {
		s.Fatalf("%v", err)
	}
	return out
}

// engineDir is where engine2.sh keeps the engine's socket, data and log.
func (h *namesHost) engineDir() string { return "/tmp/felt-engine-" + h.ns }

// nameLookups sets up the two hosts, measures, and leaves nothing behind:
// stopping an engine removes its containers, networks and plugin, and the
// namespaces go after it, also when a step fails or on an interrupt.
func nameLookups(s *scope, r *NameLookups) {
	*r = NameLookups{Lookups: namesLookups}
	testkit.NeedCommands(s, "docker", "dockerd", "containerd", "runc", "nsenter", "unshare", "ip", "bash")
	consul.Binary(s)
	if _, err := docker("image", "inspect", dockerImage); err != nil {
		s.Fatalf("image %s missing in this machine's engine (make image builds it): %v", dockerImage, err)
	}
	top, err := filepath.Abs("..") // go test runs in bench/
	if err != nil {
		s.Fatalf("module root: %v", err)
	}
	engine2 := filepath.Join(top, "scripts", "engine2.sh")
	hs := []*namesHost{
		{name: "host 1", ns: namesNSStart + "1", addr: "192.168.96.11"},
		{name: "host 2", ns: namesNSStart + "2", addr: "192.168.96.12"},
	}
	h1, h2 := hs[0], hs[1]
	// Directories first: their removal then runs after the engines stopped.
	for _, h := range hs {
		h.state = s.TempDir()
	}
	pluginDir := filepath.Join(s.TempDir(), "plugin")
	imageTar := filepath.Join(s.TempDir(), "busybox.tar")
	stopEngines := func() {
		for _, h := range hs {
			_, _ = testkit.RunWithin(namesCmd, engine2, "stop", h.ns)
		}
	}
	cleanup := func() {
		stopEngines()
		for _, h := range hs {
			delNetns(h.ns)
		}
		delNetns(namesUL)
	}
	cleanup() // an interrupted run's
	s.Cleanup(cleanup)

	// The underlay, Consul and the upstream DNS server on it.
	testkit.MustRun(s, "ip", "netns", "add", namesUL)
	testkit.MustRun(s, "ip", "-n", namesUL, "link", "set", "lo", "up")
	testkit.MustRun(s, "ip", "-n", namesUL, "link", "add", namesBridge, "type", "bridge")
	testkit.MustRun(s, "ip", "-n", namesUL, "addr", "add", namesULAddr+"/24", "dev", namesBridge)
	testkit.MustRun(s, "ip", "-n", namesUL, "link", "set", namesBridge, "up")
	agent := consul.Start(s, consul.Options{NetNS: namesUL, Bind: namesULAddr, Client: namesULAddr})
	upstream := namesUpstream(s, namesUL, namesULAddr)
	// The engines stop (again: it is idempotent) while Consul still runs,
	// so the plugins' shutdown does not wait on it.
	s.Cleanup(stopEngines)

	if out, err := testkit.RunWithin(namesCmd, filepath.Join(top, "scripts", "plugin-rootfs.sh"), pluginDir); err != nil {
		s.Fatalf("plugin rootfs: %v\n%s", err, out)
	}
	if out, err := docker("save", "-o", imageTar, dockerImage); err != nil {
		s.Fatalf("docker save %s: %v\n%s", dockerImage, err, out)
	}

	// The engines start at once (each mostly waits), then get felt in turn.
	for _, h := range hs {
		namesNetns(s, h)
	}
	errs := make(chan error, len(hs))
	for _, h := range hs {
		go func() { errs <- startNamesEngine(engine2, h) }()
	}
	var failed []string
	for range hs {
		if err := <-errs; err != nil {
			failed = append(failed, err.Error())
		}
	}
	if len(failed) > 0 {
		s.Fatalf("%s", strings.Join(failed, "\n"))
	}
	r.Engine = h1.must(s, "version", "-f", "{{.Server.Version}}")
	for _, h := range hs {
		h.must(s, "load", "-q", "-i", imageTar)
		h.must(s, "plugin", "create", namesPlugin, pluginDir)
		// As deployed (info logging); the upstream is the underlay's test
		// server, never a real resolver.
		h.must(s, "plugin", "set", namesPlugin, "state.source="+h.state, "docker.source="+h.engineDir(),
			"CONSUL_HTTP_ADDR="+agent.Addr, "FELT_IFACE="+namesHostIF, "FELT_DNS_UPSTREAM="+namesULAddr)
		h.must(s, "plugin", "enable", namesPlugin)
	}

	// One network, created on host 1; felt's cluster networks create it on
	// host 2.
	h1.must(s, "network", "create", "-d", namesPlugin, "--ipam-driver", namesPlugin, "--subnet", namesPool, "--label", namesLabel, namesNet)
	testkit.WaitFor(s, namesNet+" on host 2", func() bool {
		out, err := h2.docker("network", "ls", "--format", "{{.Name}} {{.Driver}}")
		return err == nil && slices.Contains(strings.Split(out, "\n"), namesNet+" "+namesPlugin)
	})
	h2.must(s, "run", "-d", "--name", "web", "--label", namesLabel, "--network", namesNet, dockerImage,
		"sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www")
	h1.must(s, "run", "-d", "--name", "db", "--label", namesLabel, "--network", namesNet, dockerImage, "sleep", "1d")
	h1.must(s, "run", "-d", "--name", "client", "--label", namesLabel, "--network", namesNet, dockerImage, "sleep", "1d")
	want := map[string]string{
		"web":         namesIP(s, h2, "web"),
		"db":          namesIP(s, h1, "db"),
		namesExternal: namesExtAddr,
	}

	conn := namesConn(s, h1, "client")
	// Not timed: until web's name has reached host 1 (about a second).
	deadline := time.Now().Add(namesConverge)
	for {
		got, err := lookupA(conn, "web")
		if err == nil && slices.Equal(got, []string{want["web"]}) {
			break
		}
		if time.Now().After(deadline) {
			s.Fatalf("web (host 2, %s) does not resolve from host 1 within %s: %v %v", want["web"], namesConverge, got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The three names in turn, so that drift on a busy machine hits all of
	// them alike. Every answer is checked: a wrong or empty one would time
	// something else.
	order := []string{"web", "db", namesExternal}
	took := map[string][]time.Duration{}
	before := upstream.Load()
	for i := range namesWarmup + namesLookups {
		for _, name := range order {
			start := time.Now()
			got, err := lookupA(conn, name)
			d := time.Since(start)
			if err != nil || !slices.Equal(got, []string{want[name]}) {
				s.Fatalf("lookup %d of %s from host 1: %v %v, want [%s]", i, name, got, err, want[name])
			}
			if i >= namesWarmup { // the first ones pay for cold caches and the scheduler waking up
				took[name] = append(took[name], d)
			}
		}
	}
	// The external name must really have gone through felt to the
	// upstream each time, or its number would time a cache.
	if n := upstream.Load() - before; n < namesWarmup+namesLookups {
		s.Fatalf("the upstream DNS server saw %d queries for %d lookups of %s", n, namesWarmup+namesLookups, namesExternal)
	}
	r.CrossHost, r.Local, r.External = distOf(took["web"], "µs"), distOf(took["db"], "µs"), distOf(took[namesExternal], "µs")
	r.CrossHostRatio, r.ExternalRatio = ratio(r.CrossHost.P50, r.Local.P50), ratio(r.External.P50, r.Local.P50)
	r.Available = true
	logf("  name lookups (p50 / p99): cross-host %s / %s, local %s / %s, external %s / %s",
		us(r.CrossHost.P50), us(r.CrossHost.P99), us(r.Local.P50), us(r.Local.P99), us(r.External.P50), us(r.External.P99))
}

func delNetns(ns string) {
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		_, _ = testkit.RunWithin(namesCmd, "ip", "netns", "del", ns)
	}
}

// namesNetns makes h's namespace and its link to the underlay bridge.
func namesNetns(s *scope, h *namesHost) {
	testkit.MustRun(s, "ip", "netns", "add", h.ns)
	testkit.MustRun(s, "ip", "-n", h.ns, "link", "set", "lo", "up")
	peer := "fbn-" + strings.TrimPrefix(h.ns, namesNSStart)
	testkit.MustRun(s, "ip", "-n", namesUL, "link", "add", peer, "type", "veth", "peer", "name", namesHostIF, "netns", h.ns)
	testkit.MustRun(s, "ip", "-n", namesUL, "link", "set", peer, "master", namesBridge, "up")
	testkit.MustRun(s, "ip", "-n", h.ns, "addr", "add", h.addr+"/24", "dev", namesHostIF)
	testkit.MustRun(s, "ip", "-n", h.ns, "link", "set", namesHostIF, "up")
	testkit.MustRun(s, "ip", "-n", h.ns, "route", "add", "default", "via", namesULAddr)
}

// startNamesEngine starts h's dockerd (this machine's Docker) with the
// names setting in its daemon.json. It runs in a goroutine: no scope calls.
func startNamesEngine(engine2 string, h *namesHost) error {
	ctx, cancel := context.WithTimeout(context.Background(), namesCmd)
	defer cancel()
	cmd := exec.CommandContext(ctx, engine2, "start", h.ns)
	cmd.Env = append(os.Environ(), `ENGINE2_DAEMON_JSON={"dns":["169.254.53.53"]}`)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: starting Docker in %s (scripts/engine2.sh): %v\n%s", h.name, h.ns, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	h.host = lines[len(lines)-1]
	return nil
}

func namesIP(s *scope, h *namesHost, ctr string) string {
	return h.must(s, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, namesNet), ctr)
}

// namesConn is a UDP socket to Docker's resolver made in ctr's network
// namespace: the queries take a container's path (Docker's DNAT to its
// resolver, its forwarding to felt through the container's route to
// 169.254.53.53) without a process started per lookup.
func namesConn(s *scope, h *namesHost, ctr string) *dns.Conn {
	pid := h.must(s, "inspect", "-f", "{{.State.Pid}}", ctr)
	ns, err := netns.GetFromPath("/proc/" + pid + "/ns/net")
	if err != nil {
		s.Fatalf("%s on %s: its network namespace: %v", ctr, h.name, err)
	}
	defer ns.Close()
	var conn *dns.Conn
	if err := nsutil.Do(ns, func() (err error) {
		conn, err = dns.Dial("udp", "127.0.0.11:53")
		return err
	}); err != nil {
		s.Fatalf("a socket in %s's namespace: %v", ctr, err)
	}
	s.Cleanup(func() { _ = conn.Close() })
	return conn
}

// lookupA asks conn for name's A records: the addresses, sorted; an error
// for a failed exchange or an answer other than NOERROR.
func lookupA(conn *dns.Conn, name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second)) // a bound against a lost reply, not a target
	if err := conn.WriteMsg(m); err != nil {
		return nil, err
	}
	for {
		r, err := conn.ReadMsg()
		if err != nil {
			return nil, err
		}
		if r.Id != m.Id { // a late reply to an earlier query that timed out
			continue
		}
		if r.Rcode != dns.RcodeSuccess {
			return nil, fmt.Errorf("%s: %s", name, dns.RcodeToString[r.Rcode])
		}
		var ips []string
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				ips = append(ips, a.A.String())
			}
		}
		slices.Sort(ips)
		return ips, nil
	}
}

// namesUpstream is a DNS server at addr:53 (UDP) in network namespace ns:
// namesExternal A namesExtAddr, NXDOMAIN for every other name. It counts
// queries and stops at the scope's end.
func namesUpstream(s *scope, ns, addr string) *atomic.Int64 {
	var n atomic.Int64
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 && strings.EqualFold(r.Question[0].Name, namesExternal+".") {
			if r.Question[0].Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.ParseIP(namesExtAddr)})
			}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	handle, err := netns.GetFromName(ns)
	if err != nil {
		s.Fatalf("namespace %s: %v", ns, err)
	}
	defer handle.Close()
	var pc net.PacketConn
	if err := nsutil.Do(handle, func() (err error) { pc, err = net.ListenPacket("udp4", addr+":53"); return err }); err != nil {
		s.Fatalf("upstream DNS server in %s: %v", ns, err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	s.Cleanup(func() { _ = srv.Shutdown() })
	return &n
}

// us shows a duration in µs, or in ms from 1 ms on.
func us(v float64) string {
	if v >= 1000 {
		return ms(v / 1000)
	}
	return fmt.Sprintf("%.0f µs", v)
}
