package names

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/felt-net/felt/cluster"
	"github.com/felt-net/felt/lease"
)

var (
	blue    = netip.MustParsePrefix("10.42.0.0/16")
	red     = netip.MustParsePrefix("10.43.0.0/16")
	t0      = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	h2blue  = netip.MustParsePrefix("10.42.2.0/24")
	h3blue  = netip.MustParsePrefix("10.42.3.0/24")
	h2red   = netip.MustParsePrefix("10.43.2.0/24")
	ipWeb   = netip.MustParseAddr("10.42.2.2")
	ipAPI3  = netip.MustParseAddr("10.42.3.5")
	ipDB    = netip.MustParseAddr("10.43.2.7")
	ipLiar  = netip.MustParseAddr("10.42.9.9") // in no lease of its host
	ipLong  = netip.MustParseAddr("10.42.2.3") // its PTR name has a label too long to send
	clients = netip.MustParseAddr("10.42.1.2")
)

func ip4(s string) netip.Addr { return netip.MustParseAddr(s) }

// testIndex: h2 has web (and api) on blue and db on red, h3 api on blue
// with a lease that expires at t0+1m; h1 is this host.
func testIndex() *Index {
	recs := []lease.NameRecord{
		{Pool: blue, HostID: "h2", Entries: []lease.NameEntry{{IP: ipWeb, Names: []string{"api", "web"}, Name: "web.blue"}, {IP: ipLiar, Names: []string{"liar"}, Name: "liar.blue"}, {IP: ipLong, Names: []string{"long"}, Name: strings.Repeat("x", 64) + ".blue"}}},
		{Pool: red, HostID: "h2", Entries: []lease.NameEntry{{IP: ipDB, Names: []string{"db"}}}}, // an older felt's: no Name
		{Pool: blue, HostID: "h3", Entries: []lease.NameEntry{{IP: ipAPI3, Names: []string{"api"}, Name: "api.blue"}}},
		{Pool: blue, HostID: "h1", Entries: []lease.NameEntry{{IP: ip4("10.42.1.9"), Names: []string{"mine"}, Name: "mine.blue"}}},
	}
	leases := []lease.Lease{
		{Pool: blue, Subnet: h2blue, HostID: "h2"},
		{Pool: red, Subnet: h2red, HostID: "h2", Expiry: t0.Add(time.Hour)},
		{Pool: blue, Subnet: h3blue, HostID: "h3", Expiry: t0.Add(time.Minute)},
		{Pool: blue, Subnet: netip.MustParsePrefix("10.42.1.0/24"), HostID: "h1"},
	}
	x := NewIndex(nil, "h1", nil)
	t := build(recs, leases, "h1")
	x.table.Store(&t)
	return x
}

func TestIndexLookup(t *testing.T) {
	x := testIndex()
	for _, tc := range []struct {
		pools []netip.Prefix
		name  string
		now   time.Time
		want  []netip.Addr
	}{
		{[]netip.Prefix{blue}, "web", t0, []netip.Addr{ipWeb}},
		{[]netip.Prefix{blue}, "api", t0, []netip.Addr{ipWeb, ipAPI3}},
		{[]netip.Prefix{blue}, "api", t0.Add(2 * time.Minute), []netip.Addr{ipWeb}}, // h3's lease expired
		{[]netip.Prefix{red}, "web", t0, nil},                                       // another network
		{[]netip.Prefix{blue}, "db", t0, nil},
		{[]netip.Prefix{blue, red}, "db", t0, []netip.Addr{ipDB}},
		{[]netip.Prefix{blue}, "liar", t0, nil}, // outside its host's lease
		{[]netip.Prefix{blue}, "mine", t0, nil}, // this host's own: Docker answers it
	} {
		got, _ := x.Lookup(tc.pools, tc.name, tc.now)
		slices.SortFunc(got, netip.Addr.Compare)
		slices.SortFunc(tc.want, netip.Addr.Compare)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Lookup(%v, %s, %s) = %v, want %v", tc.pools, tc.name, tc.now.Format(time.TimeOnly), got, tc.want)
		}
	}
}

func TestIndexReverse(t *testing.T) {
	x := testIndex()
	for _, tc := range []struct {
		pools []netip.Prefix
		ip    netip.Addr
		now   time.Time
		want  string
	}{
		{[]netip.Prefix{blue}, ipWeb, t0, "web.blue"},
		{[]netip.Prefix{blue}, ipAPI3, t0, "api.blue"},
		{[]netip.Prefix{blue}, ipAPI3, t0.Add(2 * time.Minute), ""}, // h3's lease expired
		{[]netip.Prefix{red}, ipWeb, t0, ""},                        // another network
		{[]netip.Prefix{red}, ipDB, t0, ""},                         // an older felt's record: no name to give
		{[]netip.Prefix{blue}, ipLiar, t0, ""},                      // outside its host's lease
		{[]netip.Prefix{blue}, ipLong, t0, ""},                      // no valid DNS name
		{[]netip.Prefix{blue}, ip4("10.42.1.9"), t0, ""},            // this host's own: Docker answers it
	} {
		if got, _ := x.Reverse(tc.pools, tc.ip, tc.now); got != tc.want {
			t.Errorf("Reverse(%v, %s, %s) = %q, want %q", tc.pools, tc.ip, tc.now.Format(time.TimeOnly), got, tc.want)
		}
	}
}

func TestReverseAddr(t *testing.T) {
	for name, want := range map[string]string{
		"2.2.42.10.in-addr.arpa":   "10.42.2.2",
		"2.42.10.in-addr.arpa":     "",
		"1.2.2.42.10.in-addr.arpa": "",
		"x.2.42.10.in-addr.arpa":   "",
		"256.2.42.10.in-addr.arpa": "",
		"2.2.42.10.ip6.arpa":       "",
		"web":                      "",
	} {
		ip, ok := reverseAddr(name)
		if got := ""; ok {
			got = ip.String()
			if got != want {
				t.Errorf("reverseAddr(%q) = %s, want %q", name, got, want)
			}
		} else if want != "" {
			t.Errorf("reverseAddr(%q) refused, want %s", name, want)
		}
	}
}

func TestPTRName(t *testing.T) {
	c := cluster.Container{Name: "Web"}
	if got := ptrName(c, cluster.ContainerNet{Name: "Blue"}); got != "web.blue" {
		t.Errorf("ptrName = %q, want web.blue", got)
	}
	if got := ptrName(c, cluster.ContainerNet{Name: "my net"}); got != "" {
		t.Errorf("ptrName with a network name that is no DNS label = %q, want none", got)
	}
}

func TestNamesOf(t *testing.T) {
	c := cluster.Container{ID: "822dc74a7073aaaa", Name: "proj_web_1", Labels: map[string]string{"com.docker.compose.service": "web"}}
	// API 1.41: name, aliases (short ID, service), short ID, label.
	got := NamesOf(c, cluster.ContainerNet{Aliases: []string{"822dc74a7073", "web", "Bad Name!"}})
	if want := []string{"822dc74a7073", "proj_web_1", "web"}; !slices.Equal(got, want) {
		t.Errorf("1.41: %v, want %v", got, want)
	}
	// API ≥ 1.44: DNSNames alone.
	got = NamesOf(c, cluster.ContainerNet{Aliases: []string{"api"}, DNSNames: []string{"web", "API", "822dc74a7073"}})
	if want := []string{"822dc74a7073", "api", "web"}; !slices.Equal(got, want) {
		t.Errorf("1.45: %v, want %v", got, want)
	}
	if ValidName(strings.Repeat("a", 64)) || !ValidName("a.b-c_d") || ValidName("a..b") {
		t.Error("ValidName")
	}
}

type fakeScope map[netip.Addr]Source

func (f fakeScope) Of(_ context.Context, src netip.Addr) (Source, error) { return f[src], nil }

// upstream is a DNS server on 127.0.0.1: ext.test A 192.0.2.80, NXDOMAIN
// with the root's SOA (TTL 86400) otherwise; it counts queries.
func upstream(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Name == "ext.test." && r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR("ext.test. 300 IN A 192.0.2.80")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR(". 86400 IN SOA a.root-servers.net. nstld.verisign-grs.com. 1 1800 900 604800 86400")
			m.Ns = append(m.Ns, soa)
		}
		_ = w.WriteMsg(m)
	})
	pc, l := listenUDPAndTCP(t)
	su, st := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: l, Handler: h}
	go su.ActivateAndServe()
	go st.ActivateAndServe()
	t.Cleanup(func() { su.Shutdown(); st.Shutdown() })
	return pc.LocalAddr().String(), &n
}

// startServer runs a Server on 127.0.0.1 with the test index; queries
// from 127.0.0.1 count as from src (a fake scope keyed by 127.0.0.1).
func startServer(t *testing.T, pools []netip.Prefix, forward bool, ups []string) string {
	t.Helper()
	var from Source
	if pools != nil {
		from = Source{Pools: pools, Felt: true}
	}
	return startServerFor(t, from, forward, ups)
}

func startServerFor(t *testing.T, from Source, forward bool, ups []string) string {
	t.Helper()
	scope := fakeScope{ip4("127.0.0.1"): from}
	s := NewServer(ServerConfig{Index: testIndex(), Scope: scope, Forward: func(netip.Addr) bool { return forward },
		Upstreams: func() []string { return ups }, Now: func() time.Time { return t0 }})
	pc, l := listenUDPAndTCP(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, pc, l) }()
	t.Cleanup(func() { cancel(); <-done })
	return pc.LocalAddr().String()
}

// listenUDPAndTCP listens on one free port of 127.0.0.1 for both UDP and
// TCP, as DNS does. The UDP port the kernel picks may be taken for TCP by
// another process (tests running beside this one), so it tries again with
// another port then.
func listenUDPAndTCP(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	var err error
	for range 20 {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		l, lerr := net.Listen("tcp4", pc.LocalAddr().String())
		if lerr == nil {
			return pc, l
		}
		pc.Close()
		err = lerr
	}
	t.Fatalf("no port free for both UDP and TCP: %v", err)
	return nil, nil
}

func query(t *testing.T, server, netw, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: netw, Timeout: 3 * time.Second}
	var r *dns.Msg
	var err error
	for range 20 { // the server may still be starting
		if r, _, err = c.Exchange(m, server); err == nil {
			return r
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], netw, err)
	return nil
}

func addrsOf(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestServerAnswersScopedNames(t *testing.T) {
	up, count := upstream(t)
	srv := startServer(t, []netip.Prefix{blue}, true, []string{up})
	for _, netw := range []string{"udp", "tcp"} {
		r := query(t, srv, netw, "WEB", dns.TypeA)
		if got := addrsOf(r); r.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{"10.42.2.2"}) || !r.Authoritative || r.Answer[0].Header().Ttl != 1 {
			t.Fatalf("web over %s: %v %v", netw, dns.RcodeToString[r.Rcode], got)
		}
	}
	// Round robin: both hosts' api, in both orders over some queries.
	firsts := map[string]bool{}
	for range 40 {
		r := query(t, srv, "udp", "api", dns.TypeA)
		if got := addrsOf(r); !slices.Equal(got, []string{"10.42.2.2", "10.42.3.5"}) {
			t.Fatalf("api: %v", got)
		}
		firsts[r.Answer[0].(*dns.A).A.String()] = true
	}
	if len(firsts) != 2 {
		t.Errorf("api always answered in one order: %v", firsts)
	}
	// AAAA of a served name: NODATA, not NXDOMAIN, and not forwarded.
	before := count.Load()
	if r := query(t, srv, "udp", "web", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer)+len(r.Ns) != 0 {
		t.Fatalf("web AAAA: %v", r)
	}
	if count.Load() != before {
		t.Fatal("a served name's AAAA was forwarded")
	}
	// Names of another network are not seen: forwarded, NXDOMAIN relayed,
	// its SOA TTL capped for a single label.
	r := query(t, srv, "udp", "db", dns.TypeA)
	if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].Header().Ttl != 1 || count.Load() != before+1 {
		t.Fatalf("db from blue: %v", r)
	}
	// External names: forwarded over the same transport, answer relayed.
	for _, netw := range []string{"udp", "tcp"} {
		if got := addrsOf(query(t, srv, netw, "ext.test", dns.TypeA)); len(got) != 1 || got[0] != "192.0.2.80" {
			t.Fatalf("ext.test over %s: %v", netw, got)
		}
	}
}

// A reverse query for another host's container is answered with its
// name, as Docker answers one for a local container; others are forwarded.
func TestServerAnswersPTR(t *testing.T) {
	up, count := upstream(t)
	srv := startServer(t, []netip.Prefix{blue}, true, []string{up})
	for _, netw := range []string{"udp", "tcp"} {
		r := query(t, srv, netw, "2.2.42.10.in-addr.arpa", dns.TypePTR)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !r.Authoritative {
			t.Fatalf("PTR of web over %s: %v", netw, r)
		}
		if p, ok := r.Answer[0].(*dns.PTR); !ok || p.Ptr != "web.blue." || p.Hdr.Name != "2.2.42.10.in-addr.arpa." {
			t.Fatalf("PTR of web over %s: %v", netw, r.Answer[0])
		}
	}
	before := count.Load()
	query(t, srv, "udp", "7.2.43.10.in-addr.arpa", dns.TypePTR) // db: another network
	if count.Load() != before+1 {
		t.Error("a reverse query for an address of another network was not forwarded")
	}
}

func TestServerRefusesStrangers(t *testing.T) {
	up, count := upstream(t)
	srv := startServer(t, nil, false, []string{up})
	if r := query(t, srv, "udp", "ext.test", dns.TypeA); r.Rcode != dns.RcodeRefused || count.Load() != 0 {
		t.Fatalf("a stranger's query: %s, %d forwarded", dns.RcodeToString[r.Rcode], count.Load())
	}
	// A local non-felt source (docker0, --network host) gets forwarding
	// but no names.
	srv = startServer(t, nil, true, []string{up})
	if r := query(t, srv, "udp", "web", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("web from a local bridge: %s, want the upstream's NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

// A container with only --internal felt networks gets names, and nothing
// forwarded.
func TestServerInternalOnly(t *testing.T) {
	up, count := upstream(t)
	srv := startServerFor(t, Source{Pools: []netip.Prefix{blue}, Felt: true, InternalOnly: true}, true, []string{up})
	if got := addrsOf(query(t, srv, "udp", "web", dns.TypeA)); !slices.Equal(got, []string{"10.42.2.2"}) {
		t.Fatalf("web from an internal-only container: %v", got)
	}
	if r := query(t, srv, "udp", "ext.test", dns.TypeA); r.Rcode != dns.RcodeRefused || count.Load() != 0 {
		t.Fatalf("ext.test from an internal-only container: %s, %d forwarded", dns.RcodeToString[r.Rcode], count.Load())
	}
}

func TestServerUpstreamFailover(t *testing.T) {
	up, _ := upstream(t)
	dead := "127.0.0.1:1" // nothing listens: ICMP unreachable at once
	srv := startServer(t, []netip.Prefix{blue}, true, []string{dead, up})
	if got := addrsOf(query(t, srv, "udp", "ext.test", dns.TypeA)); len(got) != 1 {
		t.Fatalf("ext.test with the first upstream dead: %v", got)
	}
	srv = startServer(t, []netip.Prefix{blue}, true, nil)
	if r := query(t, srv, "udp", "ext.test", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("no upstreams: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestUpstreams(t *testing.T) {
	got, err := ParseUpstreams("10.0.0.2, 10.0.0.3:5353")
	if err != nil || !slices.Equal(got, []string{"10.0.0.2:53", "10.0.0.3:5353"}) {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := ParseUpstreams("dns.example"); err == nil || !strings.Contains(err.Error(), "FELT_DNS_UPSTREAM") {
		t.Fatalf("a name: %v", err)
	}
	path := t.TempDir() + "/resolv.conf"
	write := func(s string) {
		if err := osWriteFile(path, s); err != nil {
			t.Fatal(err)
		}
	}
	write("nameserver 169.254.53.53\nnameserver 127.0.0.11\nnameserver 127.0.0.53\noptions edns0\n")
	u := NewUpstreams(nil, path, ip4("169.254.53.53"))
	if got := u.Servers(); !slices.Equal(got, []string{"127.0.0.53:53"}) {
		t.Fatalf("resolv.conf: %v", got)
	}
	if got := NewUpstreams([]string{"10.0.0.2:53"}, path, netip.Addr{}).Servers(); !slices.Equal(got, []string{"10.0.0.2:53"}) {
		t.Fatalf("FELT_DNS_UPSTREAM wins: %v", got)
	}
}
