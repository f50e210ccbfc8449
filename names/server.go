package names

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Scope maps a query's source to what it may see (StateScope).
type Scope interface {
	Of(ctx context.Context, src netip.Addr) (Source, error)
}

// ServerConfig holds the server's dependencies.
type ServerConfig struct {
	Addr      netip.AddrPort // FELT_DNS, port 53
	Index     *Index
	Scope     Scope
	Forward   func(src netip.Addr) bool // besides felt endpoints, who gets forwarding (LocalSources.Allowed)
	Upstreams func() []string           // host:port, in order
	Log       *slog.Logger
	Now       func() time.Time // nil: time.Now
}

// Forwarding bounds: Docker's own resolver gives up after 4 s, so felt
// must answer (SERVFAIL at worst) before that.
const (
	tryTimeout   = 1500 * time.Millisecond
	totalTimeout = 3500 * time.Millisecond
	maxForwards  = 1024 // concurrent, as Docker's resolver
	// ttl of felt's answers: names change as containers come and go, and
	// the issue asks for 2 s; Docker, glibc and musl do not cache anyway.
	ttl = 1
)

// Server answers DNS on FELT_DNS (UDP and TCP): A records of other
// hosts' containers on the asking container's networks, NODATA for other
// types of those names, and everything else forwarded upstream.
type Server struct {
	cfg  ServerConfig
	sem  chan struct{}
	warn sync.Once
}

// NewServer returns a server; Serve starts it.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Forward == nil {
		cfg.Forward = func(netip.Addr) bool { return false }
	}
	return &Server{cfg: cfg, sem: make(chan struct{}, maxForwards)}
}

// Serve binds UDP and TCP on the address and serves until ctx ends. A
// failed bind (something on 0.0.0.0:53) is returned at once.
func (s *Server) Serve(ctx context.Context) error {
	pc, err := net.ListenPacket("udp4", s.cfg.Addr.String())
	if err != nil {
		return fmt.Errorf("FELT_DNS: listening on %s/udp: %w (is another DNS server bound to 0.0.0.0:53?)", s.cfg.Addr, err)
	}
	l, err := net.Listen("tcp4", s.cfg.Addr.String())
	if err != nil {
		pc.Close()
		return fmt.Errorf("FELT_DNS: listening on %s/tcp: %w (is another DNS server bound to 0.0.0.0:53?)", s.cfg.Addr, err)
	}
	return s.serve(ctx, pc, l)
}

// serve serves on pc and l until ctx ends, and closes them.
func (s *Server) serve(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: l, Handler: s}
	// Shutdown of a server not yet started fails and leaves it to start:
	// wait for both to start first.
	started := make(chan struct{}, 2)
	udp.NotifyStartedFunc = func() { started <- struct{}{} }
	tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	errc := make(chan error, 2)
	go func() { errc <- udp.ActivateAndServe() }()
	go func() { errc <- tcp.ActivateAndServe() }()
	for range 2 {
		select {
		case <-started:
		case err := <-errc:
			_ = udp.Shutdown()
			_ = tcp.Shutdown()
			pc.Close()
			l.Close()
			return err
		}
	}
	s.cfg.Log.Info("serving container names", "addr", pc.LocalAddr())
	var err error
	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	_ = udp.Shutdown()
	_ = tcp.Shutdown()
	return err
}

// ServeDNS answers one query.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	src := sourceOf(w.RemoteAddr())
	ctx, cancel := context.WithTimeout(context.Background(), totalTimeout)
	defer cancel()
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		s.reply(w, req, dns.RcodeNotImplemented)
		return
	}
	q := req.Question[0]
	from, err := s.cfg.Scope.Of(ctx, src)
	if err != nil {
		s.cfg.Log.Warn("DNS: finding the networks of a query's source", "src", src, "err", err)
		s.reply(w, req, dns.RcodeServerFailure)
		return
	}
	if !from.Felt && !s.cfg.Forward(src) {
		s.reply(w, req, dns.RcodeRefused)
		return
	}
	name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
	if from.Felt && q.Qclass == dns.ClassINET {
		if ips, _ := s.cfg.Index.Lookup(from.Pools, name, s.cfg.Now()); len(ips) > 0 {
			s.answer(w, req, q, ips)
			return
		}
		if ip, ok := reverseAddr(name); ok && q.Qtype == dns.TypePTR {
			if n, _ := s.cfg.Index.Reverse(from.Pools, ip, s.cfg.Now()); n != "" {
				s.answerPTR(w, req, q, n)
				return
			}
		}
	}
	if from.InternalOnly {
		s.reply(w, req, dns.RcodeRefused)
		return
	}
	s.forward(ctx, w, req, name)
}

func sourceOf(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	}
	return ip.Unmap()
}

func (s *Server) reply(w dns.ResponseWriter, req *dns.Msg, rcode int) {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	_ = w.WriteMsg(m)
}

// answer serves a name felt knows: A records shuffled (round robin, as
// Docker's shuffleAddr), any other type NODATA (NOERROR, no records, no
// SOA: nothing for a client to cache negatively; an NXDOMAIN for AAAA
// makes busybox report the whole name missing).
func (s *Server) answer(w dns.ResponseWriter, req *dns.Msg, q dns.Question, ips []netip.Addr) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative, m.RecursionAvailable = true, true
	if q.Qtype == dns.TypeA {
		rand.Shuffle(len(ips), func(i, j int) { ips[i], ips[j] = ips[j], ips[i] })
		for _, ip := range ips {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: ip.AsSlice()})
		}
	}
	size := dns.MinMsgSize
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
		size = dns.MaxMsgSize
	} else if o := req.IsEdns0(); o != nil {
		size = max(int(o.UDPSize()), dns.MinMsgSize)
		m.SetEdns0(o.UDPSize(), false)
	}
	m.Truncate(size)
	_ = w.WriteMsg(m)
}

// answerPTR answers a reverse query for another host's container with its
// name, as Docker answers one for a local container.
func (s *Server) answerPTR(w dns.ResponseWriter, req *dns.Msg, q dns.Question, name string) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative, m.RecursionAvailable = true, true
	m.Answer = append(m.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl}, Ptr: dns.Fqdn(name)})
	_ = w.WriteMsg(m)
}

// reverseAddr is the IPv4 address a reverse name ("4.3.2.1.in-addr.arpa",
// lowercased, no trailing dot) stands for; ok is false for anything else,
// a partial name ("3.2.1.in-addr.arpa") included.
func reverseAddr(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa")
	if !ok {
		return netip.Addr{}, false
	}
	labels := strings.Split(rest, ".")
	if len(labels) != 4 {
		return netip.Addr{}, false
	}
	slices.Reverse(labels)
	ip, err := netip.ParseAddr(strings.Join(labels, "."))
	if err != nil || !ip.Is4() {
		return netip.Addr{}, false
	}
	return ip, true
}

// forward relays the query to the upstreams in order, over the transport
// it came on, and their answer back unchanged but for its ID; SERVFAIL if
// none answers. A SERVFAIL or REFUSED answer tries the next server.
func (s *Server) forward(ctx context.Context, w dns.ResponseWriter, req *dns.Msg, name string) {
	ups := s.cfg.Upstreams()
	if len(ups) == 0 {
		s.warn.Do(func() {
			s.cfg.Log.Warn("DNS: no upstream resolvers (empty /etc/resolv.conf and FELT_DNS_UPSTREAM unset): names felt does not serve fail")
		})
		s.reply(w, req, dns.RcodeServerFailure)
		return
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		s.reply(w, req, dns.RcodeServerFailure)
		return
	}
	netw := "udp"
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
		netw = "tcp"
	}
	c := &dns.Client{Net: netw, Timeout: tryTimeout, UDPSize: dns.MaxMsgSize}
	var last *dns.Msg
	var err error
	for _, up := range ups {
		if ctx.Err() != nil {
			break
		}
		var resp *dns.Msg
		resp, _, err = c.ExchangeContext(ctx, req, up)
		if err != nil {
			continue
		}
		last = resp
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			continue
		}
		break
	}
	if last == nil {
		s.cfg.Log.Debug("DNS: no upstream answered", "name", name, "err", err)
		s.reply(w, req, dns.RcodeServerFailure)
		return
	}
	last.Id = req.Id
	if !strings.Contains(name, ".") {
		capNegativeTTL(last)
	}
	_ = w.WriteMsg(last)
}

// capNegativeTTL caps the SOA TTL of a negative answer to 1 s: for a
// single label the root zone's SOA says 86400, and a caching client would
// remember that "web" does not exist until long after it starts.
func capNegativeTTL(m *dns.Msg) {
	if len(m.Answer) > 0 {
		return
	}
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			soa.Hdr.Ttl = min(soa.Hdr.Ttl, ttl)
			soa.Minttl = min(soa.Minttl, ttl)
		}
	}
}
