package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiProxy stands between a felt plugin and its Docker engine's API: it
// listens on <dir>/docker.sock (the plugin's docker.source is dir) and
// forwards every request to the engine's real socket. Paused, it still
// accepts connections but holds every request, counting it, until Resume:
// the plugin's Docker API is then blocked exactly as a dockerd busy with
// its own locks blocks it, while the engine itself, through its real
// socket, stays usable. A plugin handler that called the Docker API would
// hang there, and so would the docker command that made dockerd call it.
type apiProxy struct {
	Dir      string // holds docker.sock
	upstream string // the engine's socket
	srv      *http.Server
	rp       *httputil.ReverseProxy
	done     chan struct{} // closed when Serve returns

	mu       sync.Mutex
	paused   bool
	resume   chan struct{} // closed by Resume
	held     int           // requests received while paused
	total    int
	next     int
	inflight map[int]context.CancelFunc
}

// startAPIProxy starts a proxy in dir (at most ~90 bytes: a unix socket
// path's limit) to the engine socket upstream, closed at cleanup.
func startAPIProxy(t testing.TB, dir, upstream string) *apiProxy {
	t.Helper()
	p := &apiProxy{Dir: dir, upstream: upstream, inflight: map[int]context.CancelFunc{}, done: make(chan struct{})}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = "docker"
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{
			// A new connection per request after an engine restart: dockerd
			// makes its socket anew.
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", p.upstream)
			},
			DisableCompression: true,
		},
		FlushInterval: -1, // the events stream, as it comes
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "apiproxy: "+err.Error(), http.StatusBadGateway)
		},
	}
	sock := filepath.Join(dir, "docker.sock")
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("apiproxy: %v", err)
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: time.Minute}
	go func() { _ = p.srv.Serve(ln); close(p.done) }()
	t.Cleanup(p.Close)
	return p
}

func (p *apiProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.total++
	counted := false
	for p.paused {
		if !counted {
			p.held++
			counted = true
		}
		ch := p.resume
		p.mu.Unlock()
		select {
		case <-ch:
		case <-r.Context().Done(): // the client gave up (its own timeout)
			return
		}
		p.mu.Lock()
	}
	ctx, cancel := context.WithCancel(r.Context())
	id := p.next
	p.next++
	p.inflight[id] = cancel
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.inflight, id)
		p.mu.Unlock()
		cancel()
	}()
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// Pause holds every request from now on, and cuts those in flight (the
// plugin's event stream among them), so the plugin must ask again and is
// held too.
func (p *apiProxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		return
	}
	p.paused = true
	p.resume = make(chan struct{})
	p.held = 0
	for _, cancel := range p.inflight {
		cancel()
	}
}

// Resume forwards the held requests and every later one.
func (p *apiProxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused = false
		close(p.resume)
	}
}

// Held is the number of requests received since the last Pause.
func (p *apiProxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// Requests is the number of requests received in all.
func (p *apiProxy) Requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// Close resumes (held handlers return) and stops serving.
func (p *apiProxy) Close() {
	p.Resume()
	_ = p.srv.Close()
	<-p.done
	_ = os.Remove(filepath.Join(p.Dir, "docker.sock"))
}

// TestClusterAPIProxy: the proxy forwards, holds and counts while paused
// (also a request already streaming), and forwards the held ones on
// Resume; against a stand-in engine on a unix socket.
func TestClusterAPIProxy(t *testing.T) {
	dir := t.TempDir()
	upstream := filepath.Join(dir, "engine.sock")
	ln, err := net.Listen("unix", upstream)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "OK") })
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "{}\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	engineSrv := &http.Server{Handler: mux}
	go func() { _ = engineSrv.Serve(ln) }()
	t.Cleanup(func() { _ = engineSrv.Close() })

	pdir := filepath.Join(dir, "p")
	if err := os.Mkdir(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := startAPIProxy(t, pdir, upstream)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(pdir, "docker.sock"))
	}}}
	get := func(ctx context.Context, path string) (string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if got, err := get(context.Background(), "/_ping"); err != nil || got != "OK" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}

	// A stream in flight is cut by Pause.
	streamDone := make(chan error, 1)
	go func() { _, err := get(context.Background(), "/events"); streamDone <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		n := len(p.inflight)
		p.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the event stream did not reach the proxy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Pause()
	select {
	case <-streamDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Pause did not cut the stream in flight")
	}

	// Held while paused, counted; a client that gives up is let go.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := get(ctx, "/_ping"); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("paused: request answered (err %v), want it held until the client's deadline", err)
	}
	res := make(chan string, 1)
	go func() { got, _ := get(context.Background(), "/_ping"); res <- got }()
	deadline = time.Now().Add(10 * time.Second)
	for p.Held() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("held %d requests, want 2", p.Held())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case got := <-res:
		t.Fatalf("paused: request answered %q", got)
	default:
	}
	p.Resume()
	select {
	case got := <-res:
		if got != "OK" {
			t.Fatalf("held request answered %q after Resume", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held request not forwarded after Resume")
	}
	if p.Requests() != 4 {
		t.Errorf("counted %d requests, want 4", p.Requests())
	}
}
