package plugin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/felt-net/felt/cluster"
)

// Every call dockerd makes reaches its driver method with a context that
// the cluster engine refuses: a handler cannot call Docker, even by
// mistake, however deep below (the deadlock rule of docs/plans/cluster-networks.md §4).
// All driver calls go through handle (answer and ack use it).
func TestServerHandlersCannotCallDocker(t *testing.T) {
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second)
	s.SetReady(Drivers{})
	// An engine whose Docker does not exist: any call that got past the
	// guard would fail with a connection error instead.
	engine := cluster.NewEngine(cluster.EngineConfig{Host: "unix://" + filepath.Join(t.TempDir(), "none.sock"), DriverName: "felt:latest"})
	var inHandler, outside error
	handle(s, "/Test.CallsDocker", func(ctx context.Context, _ *struct{}) (any, error) {
		_, inHandler = engine.Networks(ctx)
		return nil, nil
	})
	srv := httptest.NewServer(s)
	defer srv.Close()
	if code, m := post(t, srv, "/Test.CallsDocker", "{}"); code != http.StatusOK {
		t.Fatalf("answered %d %v", code, m)
	}
	if !errors.Is(inHandler, cluster.ErrInHandler) {
		t.Errorf("Docker call from a handler: %v, want cluster.ErrInHandler", inHandler)
	}
	// The same call outside a handler is let through (and fails to connect).
	_, outside = engine.Networks(context.Background())
	if outside == nil || errors.Is(outside, cluster.ErrInHandler) {
		t.Errorf("Docker call outside a handler: %v, want a connection error", outside)
	}
}
