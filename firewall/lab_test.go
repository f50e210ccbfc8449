package firewall_test

import (
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
)

// A lab is one Docker host in a network namespace, as felt and Docker leave
// it, with a container namespace behind each bridge:
//
//	felt-red  10.1.1.1/24 (pool 10.1.0.0/16): red (.2, also on docker_gwbridge,
//	          its default route, as Docker attaches felt containers) and
//	          redgw (.3, default route via the felt gateway)
//	rpeer     10.1.2.1/24: redpeer (10.1.2.2), red's subnet on another host
//	          as an overlay device reaches it, so red -> redpeer is forwarded
//	felt-blue 10.2.1.1/24 (pool 10.2.0.0/16): blue (.2, also on docker_gwbridge)
//	docker0   172.17.0.1/16: plain (172.17.0.2), a plain Docker bridge network
//	docker_gwbridge 172.18.0.1/16: red .2, blue .3
//
// Every address is inside these namespaces.
type lab struct {
	host                          *netns.NS
	red, redgw, redPeer, blue, dk *netns.NS
}

var (
	redPool  = netip.MustParsePrefix("10.1.0.0/16")
	bluePool = netip.MustParsePrefix("10.2.0.0/16")
	redIP    = netip.MustParseAddr("10.1.1.2")
	redGwIP  = netip.MustParseAddr("10.1.1.3")
	peerIP   = netip.MustParseAddr("10.1.2.2")
	blueIP   = netip.MustParseAddr("10.2.1.2")
	plainIP  = netip.MustParseAddr("172.17.0.2")
)

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{host: netns.New(t, "host")}
	h := l.host
	h.Sysctl(t, "net.ipv4.ip_forward", "1")
	for _, br := range []struct{ name, addr string }{
		{"felt-red", "10.1.1.1/24"}, {"felt-blue", "10.2.1.1/24"},
		{"docker0", "172.17.0.1/16"}, {"docker_gwbridge", "172.18.0.1/16"},
	} {
		h.Bridge(t, br.name)
		h.AddAddr(t, br.name, br.addr)
	}
	// ctr makes a container namespace with eth0 on bridge (or, with an
	// empty bridge, on a routed host link called hostEnd).
	ctr := func(base, hostEnd, bridge, addr string) *netns.NS {
		c := netns.New(t, base)
		netns.Veth(t, h, hostEnd, c, "eth0")
		if bridge != "" {
			h.SetMaster(t, hostEnd, bridge)
		}
		c.AddAddr(t, "eth0", addr)
		return c
	}
	gw := func(c *netns.NS, hostEnd, addr string) {
		netns.Veth(t, h, hostEnd, c, "eth1")
		h.SetMaster(t, hostEnd, "docker_gwbridge")
		c.AddAddr(t, "eth1", addr)
		c.AddRoute(t, "default", netip.MustParseAddr("172.18.0.1"))
	}
	l.red = ctr("red", "vred", "felt-red", "10.1.1.2/24")
	l.red.AddRoute(t, "10.1.0.0/16", netip.MustParseAddr("10.1.1.1")) // felt's route to the pool
	gw(l.red, "vredg", "172.18.0.2/16")
	l.redgw = ctr("redgw", "vredgw", "felt-red", "10.1.1.3/24")
	l.redgw.AddRoute(t, "default", netip.MustParseAddr("10.1.1.1"))
	l.redPeer = ctr("redpeer", "rpeer", "", "10.1.2.2/24")
	h.AddAddr(t, "rpeer", "10.1.2.1/24")
	l.redPeer.AddRoute(t, "10.1.0.0/16", netip.MustParseAddr("10.1.2.1"))
	l.blue = ctr("blue", "vblue", "felt-blue", "10.2.1.2/24")
	l.blue.AddRoute(t, "10.2.0.0/16", netip.MustParseAddr("10.2.1.1"))
	gw(l.blue, "vblueg", "172.18.0.3/16")
	l.dk = ctr("plain", "vplain", "docker0", "172.17.0.2/16")
	l.dk.AddRoute(t, "default", netip.MustParseAddr("172.17.0.1"))
	return l
}

// ipt runs one iptables command (of the flavour at path) in the host.
func (l *lab) ipt(t testing.TB, path string, args ...string) {
	t.Helper()
	if out, err := l.host.Run(path, append([]string{"-w"}, args...)...); err != nil {
		t.Fatalf("%s %s: %v\n%s", path, strings.Join(args, " "), err, out)
	}
}

// iptAll runs a script of iptables commands, one per line, "#" comments.
func (l *lab) iptAll(t testing.TB, path, script string) {
	t.Helper()
	for _, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		l.ipt(t, path, strings.Fields(line)...)
	}
}

// flow is one ping the isolation is judged by.
type flow struct {
	what    string
	from    func(*lab) *netns.NS
	to      netip.Addr
	reaches bool // with felt's rules in place
}

var flows = []flow{
	{"red to its own pool on another host", func(l *lab) *netns.NS { return l.red }, peerIP, true},
	{"red to its own pool on the same bridge", func(l *lab) *netns.NS { return l.redgw }, redIP, true},
	{"red to blue through docker_gwbridge", func(l *lab) *netns.NS { return l.red }, blueIP, false},
	{"blue to red through docker_gwbridge", func(l *lab) *netns.NS { return l.blue }, redIP, false},
	{"red to blue through the felt gateway", func(l *lab) *netns.NS { return l.redgw }, blueIP, false},
	{"plain Docker bridge to blue", func(l *lab) *netns.NS { return l.dk }, blueIP, false},
	{"plain Docker bridge to red", func(l *lab) *netns.NS { return l.dk }, redIP, false},
}

// check sends a real ping for every flow and fails t for each one whose
// outcome is not the wanted one; with felt false every flow must pass (the
// control: the lab routes every flow when no rule stands in the way).
func (l *lab) check(t *testing.T, felt bool) {
	t.Helper()
	errs := make([]error, len(flows))
	var wg sync.WaitGroup
	for i, f := range flows { // at once: the dropped ones each wait out a timeout
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = pingOutcome(f.from(l), f.to, f.reaches || !felt)
		}()
	}
	wg.Wait()
	for i, f := range flows {
		want := f.reaches || !felt
		if want && errs[i] != nil {
			t.Errorf("%s: blocked, want it to pass: %v", f.what, errs[i])
		}
		if !want && errs[i] == nil {
			t.Errorf("%s: a ping to %s got through, want it dropped", f.what, f.to)
		}
	}
}

// pingOutcome pings dst: generously (a few tries) when a reply is expected,
// once with a shorter wait when none is.
func pingOutcome(from *netns.NS, dst netip.Addr, expectReply bool) error {
	if !expectReply {
		return from.Ping(dst, 1500*time.Millisecond)
	}
	return from.PingTries(dst, 5, 3*time.Second)
}

// eachFlavour runs fn as a subtest for each iptables command installed
// (flavours), named after it.
func eachFlavour(t *testing.T, fn func(t *testing.T, path string)) {
	for _, path := range flavours(t) {
		t.Run(shortName(path), func(t *testing.T) { fn(t, path) })
	}
}

// flavours are the iptables commands installed: the tests run with each.
func flavours(t testing.TB) []string {
	var out []string
	for _, f := range []string{"iptables-nft", "iptables-legacy"} {
		if p, err := exec.LookPath(f); err == nil {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		testkit.Unavailable(t, "no iptables-nft or iptables-legacy")
	}
	return out
}
