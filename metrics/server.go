package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one line of a readiness answer.
type Check struct {
	Name   string // "store", "overlay"
	OK     bool
	Detail string // what was found, for people: the reason when not OK
}

// Readiness is what /readyz asks; the plugin's App implements it. Ready
// must return within the context's deadline.
type Readiness interface {
	Ready(ctx context.Context) []Check
}

// ReadyTimeout bounds one /readyz: a store that does not answer in time is
// reported unreachable rather than hanging the prober.
const ReadyTimeout = 3 * time.Second

// Handler serves /metrics from g, /healthz (200 while the process serves)
// and /readyz (200 when every check of r passes, else 503; each check on a
// line of the text body either way).
func Handler(g prometheus.Gatherer, r Readiness, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slogErrorLog{log}, ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), ReadyTimeout)
		defer cancel()
		checks := r.Ready(ctx)
		var b strings.Builder
		ready := true
		for _, c := range checks {
			state := "ok"
			if !c.OK {
				state, ready = "FAIL", false
			}
			fmt.Fprintf(&b, "%s: %s: %s\n", c.Name, state, c.Detail)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, b.String())
	})
	return mux
}

// slogErrorLog is promhttp's error log on felt's logger.
type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) {
	l.log.Warn("metrics: " + strings.TrimSpace(fmt.Sprintln(v...)))
}

// Server is the HTTP server of FELT_METRICS_ADDR.
type Server struct {
	l   net.Listener
	srv *http.Server
}

// Listen binds addr (host:port, FELT_METRICS_ADDR) at once, so that a
// port in use is reported when felt starts, naming the setting.
func Listen(addr string, h http.Handler) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("FELT_METRICS_ADDR=%s: %w", addr, err)
	}
	return &Server{l: l, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Addr is the address the server listens on (the port chosen, for :0).
func (s *Server) Addr() string { return s.l.Addr().String() }

// Serve serves until ctx ends, then shuts the server down.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(shut)
	})
	defer stop()
	if err := s.srv.Serve(s.l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server on %s: %w", s.Addr(), err)
	}
	return nil
}
