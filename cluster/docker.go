// The Engine: felt's only door to the Docker Engine API
// (github.com/moby/moby/client; nothing else in felt imports it).

package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// Net is a felt network as this host's Docker engine shows it.
type Net struct {
	ID, Name, Driver string
	Subnet           netip.Prefix      // IPAM.Config[0].Subnet as Docker shows it (the pool on 20.10; may be this host's subnet on 29): informational
	IPRange          netip.Prefix      // IPAM.Config[0].IPRange, zero if none
	DriverOpts       map[string]string // Options (-o)
	IPAMOpts         map[string]string // IPAM.Options (--ipam-opt)
	Labels           map[string]string
	Internal         bool
	Attachable       bool
	Containers       int // attached containers; only Inspect fills it (Networks: -1)
}

// CreateRequest is a network to create; its driver and IPAM driver are the
// engine's Self name.
type CreateRequest struct {
	Name                         string
	Pool                         netip.Prefix // IPAM config subnet
	IPRange                      netip.Prefix // zero: none
	DriverOpts, IPAMOpts, Labels map[string]string
	Internal, Attachable         bool
}

var (
	// ErrInUse is Remove's error when Docker refuses because containers
	// are still attached; it wraps Docker's message.
	ErrInUse = errors.New("network has active endpoints")
	// ErrNotFound is Inspect's error when Docker has no such network.
	ErrNotFound = errors.New("no such network")
)

// Engine is this host's Docker engine, as the sync loop uses it. Every
// method refuses a context marked by InHandler (ErrInHandler), bounds its
// call with a timeout, and after a connection-level error drops the client,
// so that the next call negotiates the API version and finds Self again
// (a restarted dockerd may be another version, the plugin another alias).
type Engine interface {
	// Self is this plugin's name as Docker knows it (e.g. "felt:latest"):
	// the driver name of its networks. Cached per client.
	Self(ctx context.Context) (string, error)
	// Networks lists the networks whose driver is Self, filtered by
	// Docker: an unfiltered list fails whole on networks the client cannot
	// decode (moby/moby#52991). Containers is -1.
	Networks(ctx context.Context) ([]Net, error)
	// Inspect shows one network, with its attached containers counted;
	// ErrNotFound if Docker has none with that ID or name.
	Inspect(ctx context.Context, id string) (Net, error)
	// Create creates a network with Driver and IPAM driver Self and IPv6
	// off, and returns Docker's warnings: below API 1.44 (Docker ≤ 24) a
	// duplicate name is created anyway, with only a warning.
	Create(ctx context.Context, req CreateRequest) (id string, warnings []string, err error)
	// Remove removes a network: nil if it is already gone, ErrInUse if
	// containers are attached.
	Remove(ctx context.Context, id string) error
	// WatchEvents streams Docker's network events and calls kick (which
	// must not block) for each one on a network of Self's driver. It
	// returns when the stream ends, with the error, or when ctx ends.
	WatchEvents(ctx context.Context, kick func()) error
}

// EngineConfig configures NewEngine.
type EngineConfig struct {
	Host         string // the Docker API address, e.g. "unix:///run/felt-docker/docker.sock" (FELT_DOCKER_HOST)
	DriverName   string // this plugin's name in Docker (FELT_DRIVER_NAME); "": detect it
	FallbackName string // the name when detection finds no managed-plugin mount: a bare binary's socket basename ("felt")
	Log          *slog.Logger
}

// Per-call timeouts. With socket activation, and while dockerd restores
// containers, its socket accepts but does not answer, so calls hang rather
// than fail. Create and remove run felt's own handlers and Consul writes
// inside dockerd's call, hence the longer bound.
const (
	shortCall = 15 * time.Second // ping, list, inspect, plugin inspect
	longCall  = 60 * time.Second // create, remove
)

// NewEngine returns an Engine for the Docker API at cfg.Host. It does not
// connect: the first call does, so that plugin activation never waits on
// Docker.
func NewEngine(cfg EngineConfig) Engine { return newEngine(cfg) }

// dockerEngine implements Engine with github.com/moby/moby/client.
type dockerEngine struct {
	cfg         EngineConfig
	log         *slog.Logger
	short, long time.Duration
	mountinfo   func() ([]byte, error)

	// turn is held while finding or making the client and its Self, so
	// that concurrent calls make one client, not several. A channel, so
	// that a caller waiting for it still honours its ctx.
	turn chan struct{}
	mu   sync.Mutex // guards cur
	// cur is the client in use, nil when there is none (yet, or after a
	// connection error).
	cur *conn
}

// conn is one client: negotiated once, with the Self found through it.
type conn struct {
	cli  *client.Client
	self string // "" until found
}

func newEngine(cfg EngineConfig) *dockerEngine {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &dockerEngine{cfg: cfg, log: log.With("docker", cfg.Host), short: shortCall, long: longCall,
		mountinfo: readMountinfo, turn: make(chan struct{}, 1)}
}

// get returns the current client, making one (a ping that negotiates the
// API version) if there is none, and with needSelf also its Self.
func (e *dockerEngine) get(ctx context.Context, needSelf bool) (*conn, string, error) {
	select {
	case e.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
	defer func() { <-e.turn }()
	e.mu.Lock()
	c := e.cur
	e.mu.Unlock()
	if c == nil {
		var err error
		if c, err = e.dial(ctx); err != nil {
			return nil, "", err
		}
		e.mu.Lock()
		e.cur = c
		e.mu.Unlock()
	}
	// c.self is written and read only while holding turn.
	if needSelf && c.self == "" {
		name, err := e.self(ctx, c)
		if err != nil {
			return nil, "", err
		}
		c.self = name
	}
	return c, c.self, nil
}

// call begins one Docker API call of method what: it refuses a handler's
// ctx, gets the client (with Self if needSelf), and bounds the call with
// timeout. The caller calls e.lost on an error and cancel when done.
func (e *dockerEngine) call(ctx context.Context, what string, needSelf bool, timeout time.Duration) (c *conn, self string, cctx context.Context, cancel context.CancelFunc, err error) {
	if err := e.refuse(ctx, what); err != nil {
		return nil, "", nil, nil, err
	}
	if c, self, err = e.get(ctx, needSelf); err != nil {
		return nil, "", nil, nil, err
	}
	cctx, cancel = context.WithTimeout(ctx, timeout)
	return c, self, cctx, cancel, nil
}

// dial makes a client and pings the daemon, which negotiates the API
// version: the lower of the daemon's and the client's (1.41 for Docker
// 20.10). The client itself would negotiate lazily but ignore a failed
// ping; pinging here makes an unreachable daemon an error at once.
func (e *dockerEngine) dial(ctx context.Context) (*conn, error) {
	cli, err := client.New(client.WithHost(e.cfg.Host))
	if err != nil {
		return nil, fmt.Errorf("Docker API at %s (FELT_DOCKER_HOST): %w", e.cfg.Host, err)
	}
	pctx, cancel := context.WithTimeout(ctx, e.short)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("reaching Docker at %s: %w", e.cfg.Host, err)
	}
	e.log.Info("connected to Docker", "api", cli.ClientVersion())
	return &conn{cli: cli}, nil
}

// lost drops c if err says the connection to dockerd failed (refused, cut,
// or our per-call timeout expired while the caller's ctx is still live):
// dockerd is likely restarting, and the next call starts afresh.
func (e *dockerEngine) lost(ctx context.Context, c *conn, err error) {
	if !connectionLost(ctx, err) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur != c {
		return
	}
	e.cur = nil
	_ = c.cli.Close()
	e.log.Info("lost the connection to Docker; the next call reconnects", "err", err)
}

// connectionLost reports whether err is about the connection rather than
// the request. ctx is the caller's: its own end is not the daemon's fault.
func connectionLost(ctx context.Context, err error) bool {
	switch {
	case err == nil || ctx.Err() != nil:
		return false
	case client.IsErrConnectionFailed(err), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNREFUSED):
		return true
	}
	return false
}

// driverNames are the driver names of Self's networks. A network keeps the
// driver string the user gave, and Docker resolves a plugin name without
// tag to ":latest", so `-d felt` makes a network of driver "felt" served by
// "felt:latest".
func driverNames(self string) []string {
	if name, ok := strings.CutSuffix(self, ":latest"); ok && name != "" && !strings.HasSuffix(name, "/") {
		return []string{self, name}
	}
	return []string{self}
}

// decodeHint explains a decoding failure of Docker's answer: the client's
// netip types refuse addresses such as the fd05:…::1/112 gateways Docker
// ≤ 26 reports until restarted (moby/moby#52991).
func decodeHint(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syn) || errors.As(err, &typ) || strings.Contains(err.Error(), "ParseAddr(") || strings.Contains(err.Error(), "ParsePrefix(") {
		return fmt.Errorf("%w (Docker's answer could not be decoded; if a network shows a gateway with a prefix length, such as fd05::1/112 (moby/moby#52991), restarting dockerd clears it)", err)
	}
	return err
}

func (e *dockerEngine) Self(ctx context.Context) (string, error) {
	if err := e.refuse(ctx, "Self"); err != nil {
		return "", err
	}
	_, self, err := e.get(ctx, true)
	return self, err
}

func (e *dockerEngine) Networks(ctx context.Context) ([]Net, error) {
	c, self, cctx, cancel, err := e.call(ctx, "Networks", true, e.short)
	if err != nil {
		return nil, err
	}
	defer cancel()
	names := driverNames(self)
	res, err := c.cli.NetworkList(cctx, client.NetworkListOptions{Filters: make(client.Filters).Add("driver", names...)})
	if err != nil {
		e.lost(ctx, c, err)
		return nil, fmt.Errorf("listing Docker's networks of driver %s: %w", self, decodeHint(err))
	}
	var nets []Net
	for _, s := range res.Items {
		// Docker filtered already; this only guards against a daemon
		// that ignored the filter.
		for _, d := range names {
			if s.Driver == d {
				nets = append(nets, toNet(s.Network, -1))
				break
			}
		}
	}
	return nets, nil
}

// inspectErr is an inspect's error: ErrNotFound when Docker has no such
// object, else with decodeHint's advice.
func inspectErr(kind, id string, err error) error {
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspecting %s %s: %w (%v)", kind, id, ErrNotFound, err)
	}
	return fmt.Errorf("inspecting %s %s: %w", kind, id, decodeHint(err))
}

func (e *dockerEngine) Inspect(ctx context.Context, id string) (Net, error) {
	c, _, cctx, cancel, err := e.call(ctx, "Inspect", false, e.short)
	if err != nil {
		return Net{}, err
	}
	defer cancel()
	res, err := c.cli.NetworkInspect(cctx, id, client.NetworkInspectOptions{})
	if err != nil {
		e.lost(ctx, c, err)
		return Net{}, inspectErr("network", id, err)
	}
	return toNet(res.Network.Network, len(res.Network.Containers)), nil
}

func (e *dockerEngine) Create(ctx context.Context, req CreateRequest) (string, []string, error) {
	if err := e.refuse(ctx, "Create"); err != nil {
		return "", nil, err
	}
	if !req.Pool.IsValid() {
		return "", nil, fmt.Errorf("creating network %q: no pool", req.Name)
	}
	c, self, cctx, cancel, err := e.call(ctx, "Create", true, e.long)
	if err != nil {
		return "", nil, err
	}
	defer cancel()
	cfg := network.IPAMConfig{Subnet: req.Pool, IPRange: req.IPRange} // a zero IPRange is left out
	off := false
	opts := client.NetworkCreateOptions{
		Driver: self,
		IPAM:   &network.IPAM{Driver: self, Options: req.IPAMOpts, Config: []network.IPAMConfig{cfg}},
		// EnableIPv4 stays unset: Docker before 28 does not know it.
		EnableIPv6: &off,
		Internal:   req.Internal,
		Attachable: req.Attachable,
		Options:    req.DriverOpts,
		Labels:     req.Labels,
	}
	res, err := c.cli.NetworkCreate(cctx, req.Name, opts)
	if err != nil {
		e.lost(ctx, c, err)
		return "", nil, fmt.Errorf("creating network %q on %s with driver %s: %w", req.Name, req.Pool, self, err)
	}
	return res.ID, res.Warning, nil
}

func (e *dockerEngine) Remove(ctx context.Context, id string) error {
	c, _, cctx, cancel, err := e.call(ctx, "Remove", false, e.long)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = c.cli.NetworkRemove(cctx, id, client.NetworkRemoveOptions{})
	switch {
	case err == nil:
		return nil
	case connectionLost(ctx, err):
		e.lost(ctx, c, err)
	case cerrdefs.IsNotFound(err):
		return nil
	// Docker answers 403 Forbidden with "network … has active endpoints"
	// (libnetwork's ActiveEndpointsError) from 20.10 through 29. A 403
	// alone is not enough: it also refuses removing a predefined network.
	case strings.Contains(err.Error(), "has active endpoints"):
		return fmt.Errorf("removing network %s: %w (%v)", id, ErrInUse, err)
	}
	return fmt.Errorf("removing network %s: %w", id, err)
}

func (e *dockerEngine) WatchEvents(ctx context.Context, kick func()) error {
	if err := e.refuse(ctx, "WatchEvents"); err != nil {
		return err
	}
	c, self, err := e.get(ctx, true)
	if err != nil {
		return err
	}
	names := driverNames(self)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Events waits for the answer's headers with no bound of its own; a
	// daemon that accepts but does not answer would hold it forever.
	slow := time.AfterFunc(e.short, cancel)
	res := c.cli.Events(sctx, client.EventsListOptions{Filters: make(client.Filters).Add("type", "network")})
	if !slow.Stop() && ctx.Err() == nil {
		e.lost(ctx, c, context.DeadlineExceeded)
		return fmt.Errorf("watching Docker's network events: no answer in %s", e.short)
	}
	e.log.Debug("watching Docker's network events")
	for {
		select {
		case m := <-res.Messages:
			// Every network event carries the network's driver as "type";
			// those of other drivers (a bridge connect at every docker run)
			// are not felt's business.
			if d, ok := m.Actor.Attributes["type"]; !ok || containsString(names, d) {
				kick()
			}
		case err := <-res.Err:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("Docker ended the event stream")
			}
			// The stream ends when dockerd goes away: start afresh.
			e.lost(ctx, c, io.EOF)
			return fmt.Errorf("watching Docker's network events: %w", err)
		}
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// toNet converts Docker's view of a network; containers is the number of
// attached containers, -1 if unknown.
func toNet(n network.Network, containers int) Net {
	out := Net{ID: n.ID, Name: n.Name, Driver: n.Driver, DriverOpts: n.Options, IPAMOpts: n.IPAM.Options,
		Labels: n.Labels, Internal: n.Internal, Attachable: n.Attachable, Containers: containers}
	// felt is IPv4-only; Docker lists a network's IPv4 config first, but
	// take the first IPv4 one in case it does not.
	for _, cfg := range n.IPAM.Config {
		if cfg.Subnet.Addr().Is4() {
			out.Subnet, out.IPRange = cfg.Subnet, cfg.IPRange
			break
		}
	}
	return out
}

// Containers of felt networks, for container names across hosts (issue
// 11, package names). The same client, guard (ErrInHandler) and timeouts as
// the Engine's network calls; the names loop calls them, never a handler.
