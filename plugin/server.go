package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	ipamapi "github.com/docker/go-plugins-helpers/ipam"
	netapi "github.com/docker/go-plugins-helpers/network"
	"github.com/docker/go-plugins-helpers/sdk"

	"github.com/felt-net/felt/driver"
	"github.com/felt-net/felt/ipam"
)

// manifest is the answer to Plugin.Activate: one socket, both drivers.
const manifest = `{"Implements": ["NetworkDriver", "IpamDriver"]}`

// Drivers are what the server dispatches to once start-up has built them.
type Drivers struct {
	Network *driver.Driver
	IPAM    *ipam.Driver
}

// Server is the HTTP handler of the plugin socket. Activate and both
// GetCapabilities calls are answered at once, before the store is open;
// every other call waits (up to ReadyWait) for start-up to finish.
type Server struct {
	mux     *http.ServeMux
	log     *slog.Logger
	ready   chan struct{}
	drivers Drivers
	wait    time.Duration
}

// NewServer returns a server whose drivers are supplied later by SetReady.
func NewServer(log *slog.Logger, wait time.Duration) *Server {
	s := &Server{mux: http.NewServeMux(), log: log, ready: make(chan struct{}), wait: wait}
	s.routes()
	return s
}

// SetReady installs the drivers and releases waiting calls.
func (s *Server) SetReady(d Drivers) {
	s.drivers = d
	close(s.ready)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// handle registers a call that decodes req, waits for start-up and runs fn.
func handle[Req any](s *Server, path string, fn func(ctx context.Context, req *Req) (any, error)) {
	s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body, err := io.ReadAll(r.Body)
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
		resp, err := fn(r.Context(), req)
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
	s.log.Error("request failed", "call", path, "err", err)
	w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"Err": err.Error(), "Error": err.Error()})
}

func static(s *Server, path string, v any) {
	s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		s.log.Debug("request", "call", path)
		sdk.EncodeResponse(w, v, false)
	})
}

func (s *Server) routes() {
	s.mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
		fmt.Fprintln(w, manifest)
	})
	ipamDrv := func() *ipam.Driver { return s.drivers.IPAM }
	netDrv := func() *driver.Driver { return s.drivers.Network }

	// Static answers: they must not depend on the store.
	static(s, "/NetworkDriver.GetCapabilities", driver.Capabilities())
	static(s, "/IpamDriver.GetCapabilities", (&ipam.Driver{}).GetCapabilities())
	static(s, "/IpamDriver.GetDefaultAddressSpaces", (&ipam.Driver{}).GetDefaultAddressSpaces())

	handle(s, "/IpamDriver.RequestPool", func(ctx context.Context, r *ipamapi.RequestPoolRequest) (any, error) {
		return ipamDrv().RequestPool(ctx, r)
	})
	handle(s, "/IpamDriver.ReleasePool", func(ctx context.Context, r *ipamapi.ReleasePoolRequest) (any, error) {
		return nil, ipamDrv().ReleasePool(ctx, r)
	})
	handle(s, "/IpamDriver.RequestAddress", func(ctx context.Context, r *ipamapi.RequestAddressRequest) (any, error) {
		return ipamDrv().RequestAddress(ctx, r)
	})
	handle(s, "/IpamDriver.ReleaseAddress", func(ctx context.Context, r *ipamapi.ReleaseAddressRequest) (any, error) {
		return nil, ipamDrv().ReleaseAddress(ctx, r)
	})

	handle(s, "/NetworkDriver.CreateNetwork", func(ctx context.Context, r *netapi.CreateNetworkRequest) (any, error) {
		return nil, netDrv().CreateNetwork(ctx, r)
	})
	handle(s, "/NetworkDriver.DeleteNetwork", func(ctx context.Context, r *netapi.DeleteNetworkRequest) (any, error) {
		return nil, netDrv().DeleteNetwork(ctx, r)
	})
	handle(s, "/NetworkDriver.CreateEndpoint", func(ctx context.Context, r *netapi.CreateEndpointRequest) (any, error) {
		return netDrv().CreateEndpoint(ctx, r)
	})
	handle(s, "/NetworkDriver.DeleteEndpoint", func(ctx context.Context, r *netapi.DeleteEndpointRequest) (any, error) {
		return nil, netDrv().DeleteEndpoint(ctx, r)
	})
	handle(s, "/NetworkDriver.EndpointOperInfo", func(ctx context.Context, r *netapi.InfoRequest) (any, error) {
		return netDrv().EndpointInfo(ctx, r)
	})
	handle(s, "/NetworkDriver.Join", func(ctx context.Context, r *netapi.JoinRequest) (any, error) {
		return netDrv().Join(ctx, r)
	})
	handle(s, "/NetworkDriver.Leave", func(ctx context.Context, r *netapi.LeaveRequest) (any, error) {
		return nil, netDrv().Leave(ctx, r)
	})
	// felt returns no gateway, so Docker handles external connectivity on
	// docker_gwbridge; these calls have nothing to do. Swarm-only calls too.
	for _, p := range []string{"ProgramExternalConnectivity", "RevokeExternalConnectivity", "DiscoverNew", "DiscoverDelete", "AllocateNetwork", "FreeNetwork"} {
		handle(s, "/NetworkDriver."+p, func(ctx context.Context, r *map[string]any) (any, error) { return nil, nil })
	}
}
