package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"
)

// Run serves the plugin until ctx ends.
func Run(ctx context.Context, s Settings, log *slog.Logger) error {
	debug.SetGCPercent(s.GCPercent)
	if s.MemoryLimit > 0 {
		debug.SetMemoryLimit(s.MemoryLimit)
	}
	l, err := Listen(s.Socket)
	if err != nil {
		return err
	}
	srv := NewServer(log, s.ReadyWait)
	tel := NewTelemetry(s.Version)
	srv.Observe(tel.Metrics)
	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(l) }()
	log.Info("listening", "socket", s.Socket)

	app, err := build(ctx, s, log, tel)
	if err != nil {
		// Keep the socket: Docker then shows this error to the user at
		// their next felt call, instead of failing to dial a plugin that
		// exited (its log is only in the daemon's).
		log.Error("start-up failed; answering every call with the error", "err", err)
		srv.SetFailed(err)
		select {
		case <-ctx.Done():
			_ = httpSrv.Close()
			return nil
		case err := <-serveErr:
			return fmt.Errorf("serve: %w", err)
		}
	}
	defer app.Close()
	srv.SetReady(Drivers{Network: app.Driver, IPAM: app.IPAM, Status: app.Status})

	go app.Background(ctx)

	select {
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = httpSrv.Shutdown(shut)
		if err := app.Driver.Shutdown(shut); err != nil {
			log.Warn("shutdown cleanup incomplete", "err", err)
		}
		return nil
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	}
}
