package bench

import (
	"context"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// consulProxy stands between one felt host and Consul and counts what
// Consul answers it, by kind of request (trafficClass). Each real host of
// the scale part gets its own (its CONSUL_HTTP_ADDR names the proxy), so
// the bytes a host receives are its own. It listens on the underlay
// gateway inside the underlay namespace, beside Consul, and forwards
// requests unchanged: felt's Accept-Encoding goes through, so a gzipped
// answer is counted gzipped, as it crosses the wire.
type consulProxy struct {
	Addr string // host:port, for CONSUL_HTTP_ADDR

	mu     sync.Mutex
	counts map[string]traffic
}

// traffic is what Consul answered to one class of request: the requests,
// and the bytes of the answers (status line, headers and body as the
// proxy wrote them; the chunked framing of a streamed body is not counted,
// a few bytes per answer).
type traffic struct {
	Requests int   `json:"requests"`
	Bytes    int64 `json:"bytes"`
}

// startConsulProxy starts a proxy in the cluster's underlay namespace to
// its Consul, stopped at the end of s.
func startConsulProxy(s *scope, c *hosts.Cluster) *consulProxy {
	var ln net.Listener
	if err := hosts.InNetNS(s, c.UL, func() (err error) {
		ln, err = net.Listen("tcp", hosts.UnderlayGW+":0")
		return err
	}); err != nil {
		s.Fatalf("consul proxy: listen in %s: %v", c.UL, err)
	}
	p := &consulProxy{Addr: ln.Addr().String(), counts: map[string]traffic{}}
	target := &url.URL{Scheme: "http", Host: c.Consul.Addr}
	tr := testkit.NetNSTransport(c.UL)
	// Blocking queries from up to a few watches per host, plus writes.
	tr.MaxIdleConnsPerHost = 16
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = r.In.Host },
		Transport:     tr,
		FlushInterval: -1, // pass answers on as they come
		// A blocking query cut at the end is no news.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		rp.ServeHTTP(cw, r)
		p.add(trafficClass(r), cw.n)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	s.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// Blocking queries never finish on their own: cut them.
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
		tr.CloseIdleConnections()
	})
	return p
}

func (p *consulProxy) add(class string, n int64) {
	p.mu.Lock()
	t := p.counts[class]
	t.Requests++
	t.Bytes += n
	p.counts[class] = t
	p.mu.Unlock()
}

// snapshot is the counts so far. A request is counted when its answer has
// been written, so a blocking query still hanging is not in it yet.
func (p *consulProxy) snapshot() map[string]traffic {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.counts)
}

// trafficSince is after minus before, class by class, dropping classes
// that did not move.
func trafficSince(before, after map[string]traffic) map[string]traffic {
	out := map[string]traffic{}
	for k, a := range after {
		b := before[k]
		if d := (traffic{a.Requests - b.Requests, a.Bytes - b.Bytes}); d.Requests != 0 || d.Bytes != 0 {
			out[k] = d
		}
	}
	return out
}

// leaseReads sums the classes that read leases (GETs under felt/leases/:
// the watch's blocking queries, the non-blocking read each Wait starts
// with, and the pool listings of Acquire and Renew).
func leaseReads(t map[string]traffic) traffic {
	var sum traffic
	for k, v := range t {
		if strings.HasPrefix(k, "GET felt/leases/") {
			sum.Requests += v.Requests
			sum.Bytes += v.Bytes
		}
	}
	return sum
}

// trafficClass names a request by method and key prefix: the key itself
// for a listing (recurse), its parent with "*" for a single key (one class
// for all leases' writes, not one per lease), and " blocking" when it is a
// blocking query (index=). Anything but the KV API keeps its path.
func trafficClass(r *http.Request) string {
	path, ok := strings.CutPrefix(r.URL.Path, "/v1/kv/")
	if !ok {
		return r.Method + " " + r.URL.Path
	}
	q := r.URL.Query()
	if !q.Has("recurse") {
		if i := strings.LastIndexByte(strings.TrimSuffix(path, "/"), '/'); i >= 0 {
			path = path[:i+1] + "*"
		}
	}
	// Pools and subnets in keys ("felt/leases/10.128.0.0-10/…") stay: one
	// class per pool, which is what a sharded watch would tell apart.
	c := r.Method + " " + path
	if q.Has("index") {
		c += " blocking"
	}
	return c
}

// countingWriter counts the bytes of one answer: an estimate of the
// status line and headers (as HTTP/1.1 writes them), and the body.
type countingWriter struct {
	http.ResponseWriter
	n           int64
	wroteHeader bool
}

func (w *countingWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.n += int64(len(fmt.Sprintf("HTTP/1.1 %03d %s\r\n", code, http.StatusText(code))))
		for k, vs := range w.Header() {
			for _, v := range vs {
				w.n += int64(len(k) + 2 + len(v) + 2)
			}
		}
		w.n += 2 // the blank line
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// Flush lets the reverse proxy stream (FlushInterval -1) through the
// wrapper.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// countingConn counts the bytes read from a connection: on a client's
// connection to Consul, what Consul sent, on the wire (headers, chunked
// framing and compression included).
type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

// countingTransport dials from local (nil: any address) inside namespace
// ns and adds every byte read from its connections to read. One transport
// per simulated watcher: its own connections, as a host's own client
// would have.
func countingTransport(ns string, local net.Addr, read *atomic.Int64) *http.Transport {
	return &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		h, err := netns.GetFromName(ns)
		if err != nil {
			return nil, err
		}
		defer h.Close()
		var conn net.Conn
		err = nsutil.Do(h, func() (err error) {
			conn, err = (&net.Dialer{LocalAddr: local}).DialContext(ctx, network, addr)
			return err
		})
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: conn, read: read}, nil
	}}
}
