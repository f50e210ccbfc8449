package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/docker/go-plugins-helpers/sdk"

	"github.com/felt-net/felt/cluster"
	"github.com/felt-net/felt/driver"
	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/metrics"
)

// manifest is the answer to Plugin.Activate: one socket, both drivers.
const manifest = `{"Implements": ["NetworkDriver", "IpamDriver"]}`

// Drivers are what the server dispatches to once start-up has built them.
type Drivers struct {
	Network *driver.Driver
	IPAM    *ipam.Driver
	// Status answers StatusPath (felt status); nil: only the state.
	Status func(context.Context) Status
}

// MaxRequestBody bounds a request's body. Docker's largest requests (a
// CreateNetwork with its options and aux addresses) are a few kilobytes.
const MaxRequestBody = 1 << 20

// maxErrorText bounds the error text of an answer: a handler's error may
// quote a hostile request field.
const maxErrorText = 2048

// Server is the HTTP handler of the plugin socket. Activate and both
// GetCapabilities calls are answered at once, before the store is open;
// every other call waits (up to ReadyWait) for start-up to finish.
//
// Every request is answered with JSON: unknown calls with a 404, oversized
// or malformed bodies with a 4xx, handler errors with a 500, each with the
// error under "Err" and "Error". A handler that panics (a felt bug) is
// answered with a 500 too, instead of Docker seeing the connection drop,
// and counted: tests fail on any (Panics).
type Server struct {
	routes  map[string]http.HandlerFunc // by exact path: no redirects, no patterns
	log     *slog.Logger
	ready   chan struct{}
	drivers Drivers
	failed  error // start-up's error, set instead of drivers
	wait    time.Duration
	panics  atomic.Int64
	observe RequestObserver // nil: requests are not counted
}

// RequestObserver is told of every request answered (felt's metrics):
// method is the call (e.g. NetworkDriver.CreateNetwork), or "other" for a
// path felt does not serve, so that its values are bounded.
type RequestObserver interface {
	ObserveRequest(method, outcome string, took time.Duration)
}

// Observe makes the server report every request to o; call it before
// serving.
func (s *Server) Observe(o RequestObserver) { s.observe = o }

// NewServer returns a server whose drivers are supplied later by SetReady.
func NewServer(log *slog.Logger, wait time.Duration) *Server {
	s := &Server{routes: map[string]http.HandlerFunc{}, log: log, ready: make(chan struct{}), wait: wait}
	s.register()
	return s
}

// Panics is how many handler panics the server recovered from.
func (s *Server) Panics() int64 { return s.panics.Load() }

// SetReady installs the drivers and releases waiting calls.
func (s *Server) SetReady(d Drivers) {
	s.drivers = d
	close(s.ready)
}

// SetFailed records why start-up failed and releases waiting calls: every
// call but Activate and GetCapabilities is then answered with that error.
// felt keeps serving rather than exiting, so that the user sees the reason
// in `docker network create` instead of a plugin Docker cannot dial.
func (s *Server) SetFailed(err error) {
	s.failed = err
	close(s.ready)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if s.observe != nil {
		// First deferred, so it runs last: after a panic's 500 is written.
		rec := &statusRecorder{ResponseWriter: w}
		w = rec
		start := time.Now()
		defer func() { s.observe.ObserveRequest(s.methodOf(path), outcomeOf(rec.status), time.Since(start)) }()
	}
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			panic(v)
		}
		s.panics.Add(1)
		s.log.Error("handler panicked: a felt bug", "call", path, "panic", v, "stack", string(debug.Stack()))
		s.fail(w, path, http.StatusInternalServerError, fmt.Errorf("internal error in %s: %v (a felt bug; please report it with felt's log)", strings.TrimPrefix(path, "/"), v))
	}()
	h, ok := s.routes[path]
	if !ok {
		s.fail(w, path, http.StatusNotFound, fmt.Errorf("felt does not implement %s", quoted(path)))
		return
	}
	if r.Body == nil {
		r.Body = http.NoBody
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBody)
	h(w, r)
}

// methodOf is the metrics label of path: the call's name if felt serves
// it, else "other" (any path could be sent).
func (s *Server) methodOf(path string) string {
	if _, ok := s.routes[path]; ok {
		return strings.TrimPrefix(path, "/")
	}
	return "other"
}

// outcomeOf classifies an answer by its status (0: none was written, the
// caller went away while the call waited for start-up).
func outcomeOf(status int) string {
	switch {
	case status == http.StatusOK:
		return metrics.OutcomeOK
	case status == http.StatusNotFound:
		return metrics.OutcomeUnknownCall
	case status == http.StatusServiceUnavailable:
		return metrics.OutcomeUnavailable
	case status == 0:
		return metrics.OutcomeCanceled
	case status < 500:
		return metrics.OutcomeBadRequest
	default:
		return metrics.OutcomeError
	}
}

// statusRecorder remembers the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// route registers the handler of one call.
func (s *Server) route(path string, h http.HandlerFunc) { s.routes[path] = h }

// quoted renders untrusted text for an error: quoted and cut short.
func quoted(v string) string {
	if len(v) > 80 {
		return strconv.Quote(v[:80]) + "..."
	}
	return strconv.Quote(v)
}

// handle registers a call that decodes req, waits for start-up and runs fn.
func handle[Req any](s *Server, path string, fn func(ctx context.Context, req *Req) (any, error)) {
	s.route(path, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body, err := io.ReadAll(r.Body)
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.fail(w, path, http.StatusRequestEntityTooLarge, fmt.Errorf("%s request larger than %d bytes", strings.TrimPrefix(path, "/"), tooLarge.Limit))
			return
		}
		if err != nil {
			s.fail(w, path, http.StatusBadRequest, fmt.Errorf("reading request: %w", err))
			return
		}
		req := new(Req)
		if len(strings.TrimSpace(string(body))) > 0 {
			if err := json.Unmarshal(body, req); err != nil {
				s.fail(w, path, http.StatusBadRequest, fmt.Errorf("malformed JSON in %s request: %w", strings.TrimPrefix(path, "/"), err))
				return
			}
		}
		s.log.Debug("request", "call", path, "body", string(body))
		select {
		case <-s.ready:
		case <-time.After(s.wait):
			s.fail(w, path, http.StatusServiceUnavailable, errors.New("felt is still starting (opening its state store); try again"))
			return
		case <-r.Context().Done():
			return
		}
		if s.failed != nil {
			s.fail(w, path, http.StatusServiceUnavailable, fmt.Errorf("felt could not start: %w", s.failed))
			return
		}
		// The mark makes every Docker API call under this handler fail
		// at once (cluster.ErrInHandler): dockerd is waiting on us here.
		resp, err := fn(cluster.InHandler(r.Context()), req)
		if err != nil {
			s.fail(w, path, http.StatusInternalServerError, err)
			return
		}
		if resp == nil {
			resp = struct{}{}
		}
		s.log.Debug("response", "call", path, "took", time.Since(start), "body", resp)
		sdk.EncodeResponse(w, resp, false)
	})
}

// fail answers with a non-200 status and the error under both keys Docker
// reads: "Err" (network driver, and the plugin client) and "Error" (IPAM).
func (s *Server) fail(w http.ResponseWriter, path string, status int, err error) {
	msg := err.Error()
	if len(msg) > maxErrorText {
		msg = msg[:maxErrorText] + "... (cut)"
	}
	s.log.Error("request failed", "call", quoted(path), "err", msg)
	w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"Err": msg, "Error": msg})
}

func static(s *Server, path string, v any) {
	s.route(path, func(w http.ResponseWriter, r *http.Request) {
		s.log.Debug("request", "call", path)
		sdk.EncodeResponse(w, v, false)
	})
}

// answer registers a call answered by a method of the driver that drv
// returns once start-up has built it; ack one whose answer is only an error.
func answer[D, Req, Resp any](s *Server, path string, drv func() D, method func(D, context.Context, *Req) (Resp, error)) {
	handle(s, path, func(ctx context.Context, r *Req) (any, error) { return method(drv(), ctx, r) })
}

func ack[D, Req any](s *Server, path string, drv func() D, method func(D, context.Context, *Req) error) {
	handle(s, path, func(ctx context.Context, r *Req) (any, error) { return nil, method(drv(), ctx, r) })
}

func (s *Server) register() {
	s.route("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
		fmt.Fprintln(w, manifest)
	})
	ipamDrv := func() *ipam.Driver { return s.drivers.IPAM }
	netDrv := func() *driver.Driver { return s.drivers.Network }

	// Static answers: they must not depend on the store.
	static(s, "/NetworkDriver.GetCapabilities", driver.Capabilities())
	static(s, "/IpamDriver.GetCapabilities", (&ipam.Driver{}).GetCapabilities())
	static(s, "/IpamDriver.GetDefaultAddressSpaces", (&ipam.Driver{}).GetDefaultAddressSpaces())

	answer(s, "/IpamDriver.RequestPool", ipamDrv, (*ipam.Driver).RequestPool)
	ack(s, "/IpamDriver.ReleasePool", ipamDrv, (*ipam.Driver).ReleasePool)
	answer(s, "/IpamDriver.RequestAddress", ipamDrv, (*ipam.Driver).RequestAddress)
	ack(s, "/IpamDriver.ReleaseAddress", ipamDrv, (*ipam.Driver).ReleaseAddress)

	ack(s, "/NetworkDriver.CreateNetwork", netDrv, (*driver.Driver).CreateNetwork)
	ack(s, "/NetworkDriver.DeleteNetwork", netDrv, (*driver.Driver).DeleteNetwork)
	answer(s, "/NetworkDriver.CreateEndpoint", netDrv, (*driver.Driver).CreateEndpoint)
	ack(s, "/NetworkDriver.DeleteEndpoint", netDrv, (*driver.Driver).DeleteEndpoint)
	answer(s, "/NetworkDriver.EndpointOperInfo", netDrv, (*driver.Driver).EndpointInfo)
	answer(s, "/NetworkDriver.Join", netDrv, (*driver.Driver).Join)
	ack(s, "/NetworkDriver.Leave", netDrv, (*driver.Driver).Leave)
	// GwAllocCheck (Docker 28+) is not served: GetCapabilities does not
	// announce GwAllocChecker, so Docker never sends it and always takes
	// the IPv4 gateway from felt's IPAM. Unknown calls get a JSON 404.

	ack(s, "/NetworkDriver.ProgramExternalConnectivity", netDrv, (*driver.Driver).ProgramExternalConnectivity)
	ack(s, "/NetworkDriver.RevokeExternalConnectivity", netDrv, (*driver.Driver).RevokeExternalConnectivity)
	// felt's own read-only call (felt status), never Docker's.
	s.route(StatusPath, s.serveStatus)
	// Swarm-only calls, never sent to a local-scope driver: nothing to do.
	for _, p := range []string{"DiscoverNew", "DiscoverDelete", "AllocateNetwork", "FreeNetwork"} {
		handle(s, "/NetworkDriver."+p, func(ctx context.Context, r *map[string]any) (any, error) { return nil, nil })
	}
}

// serveStatus answers StatusPath without waiting: "starting" before
// SetReady, "failed" with the reason after SetFailed. It never calls
// Docker, and Status bounds its one store request.
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	st := Status{State: StatusStarting, Time: time.Now().UTC()}
	select {
	case <-s.ready:
		switch {
		case s.failed != nil:
			st.State, st.Error = StatusFailed, s.failed.Error()
		case s.drivers.Status != nil:
			st = s.drivers.Status(r.Context())
		default:
			st.State = StatusRunning
		}
	default:
	}
	sdk.EncodeResponse(w, st, false)
}
