package plugin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/cluster"
	"github.com/felt-net/felt/driver"
	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/metrics"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/backends"
	"github.com/felt-net/felt/overlay/probe"
	"github.com/felt-net/felt/state"
	"github.com/felt-net/felt/storeformat"
)

// App is a built felt: stores, drivers and overlay.
type App struct {
	Settings Settings
	Local    kv.Store
	Shared   kv.Store
	State    *state.Store
	Registry *lease.Registry
	IPAM     *ipam.Driver
	Driver   *driver.Driver
	Overlay  *overlay.Manager
	// Cluster makes networks cluster-wide; nil when off (ClusterOff says why).
	Cluster    *cluster.Sync
	ClusterOff string
	Underlay   Underlay
	Firewall   *firewall.Firewall
	Log        *slog.Logger
	// Metrics are felt's metrics; Gatherer serves them (FELT_METRICS_ADDR).
	Metrics  *metrics.Metrics
	Gatherer prometheus.Gatherer
	// Prober probes every peer through the overlay; nil when
	// FELT_PROBE_INTERVAL=0.
	Prober *probe.Prober

	leaseWatch *lease.Watch // the overlay's; closed after it, before the stores
	instance   string       // this felt's mark in kernel objects (its host ID's first 8)
	hostID     string
	backends   *overlay.Backends
}

// Telemetry is felt's metrics and the registry they are on, made before
// Build so that the socket's server counts requests from the start.
type Telemetry struct {
	Metrics  *metrics.Metrics
	Registry *prometheus.Registry
}

// NewTelemetry defines felt's metrics on a registry of their own.
func NewTelemetry(version string) Telemetry {
	reg := prometheus.NewRegistry()
	return Telemetry{Metrics: metrics.New(reg, cmp.Or(version, "dev")), Registry: reg}
}

// Build opens the stores and builds the drivers. It does not contact Consul:
// felt starts and serves existing containers while Consul is unreachable.
func Build(ctx context.Context, s Settings, log *slog.Logger) (*App, error) {
	return build(ctx, s, log, NewTelemetry(s.Version))
}

// build is Build with the metrics Run made for its server.
func build(ctx context.Context, s Settings, log *slog.Logger, tel Telemetry) (*App, error) {
	dbPath := filepath.Join(s.StateDir, "felt.db")
	local, err := boltkv.Open(dbPath)
	if err != nil {
		return nil, fmt.Errorf("state store in %s: %w", s.StateDir, err)
	}
	// The stored state's format (storeformat): this host's records are
	// checked (and migrated) now; the shared ones before the first write,
	// since Consul is not contacted at start.
	writer := "felt " + cmp.Or(s.Version, "dev")
	_, err = storeformat.Area{Store: local, Prefix: state.Key(), Format: storeformat.Local(), Writer: writer,
		Where: "local state in " + dbPath, Remedy: "move " + dbPath + " aside to start with empty state"}.Ensure(ctx)
	if err != nil {
		local.Close()
		return nil, err
	}
	shared := kv.Store(local)
	if s.ConsulAddr != "" {
		cfg := consulapi.DefaultConfig() // reads CONSUL_HTTP_ADDR, _TOKEN, _CACERT...
		c, err := consulkv.New(cfg)
		if err != nil {
			local.Close()
			return nil, err // names the address and the setting at fault
		}
		shared = c
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		local.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	st := state.New(local)
	hostID, err := st.HostID(ctx)
	if err != nil {
		local.Close()
		return nil, err
	}
	sharedWhere := "shared state in " + storeName(s) + " under " + s.KVPrefix
	if shared == kv.Store(local) {
		sharedWhere = "shared state in " + dbPath + " under " + s.KVPrefix
	}
	// Only the registry's requests are measured: App.Shared stays bare for
	// readiness probes and connection resets.
	reg := lease.NewRegistry(storeformat.Guard(storeformat.Area{Store: tel.Metrics.Store(shared), Prefix: s.KVPrefix, Format: storeformat.Shared(),
		Writer: writer, Where: sharedWhere, Remedy: "give this felt another FELT_KV_PREFIX"}), s.KVPrefix, nil)
	under := Underlay{Iface: s.Iface, PublicIP: s.PublicIP, Netlink: nl}
	instance := hostID[:8]
	fw, err := firewall.New(netns.None(), instance, s.Iptables, log)
	if err != nil {
		local.Close()
		return nil, err
	}
	fw.SetDNS(s.DNS) // FELT-INPUT lets containers reach felt's DNS (names)
	app := &App{Settings: s, Local: local, Shared: shared, State: st, Registry: reg, Underlay: under, Firewall: fw, Log: log,
		Metrics: tel.Metrics, Gatherer: tel.Registry, instance: instance, hostID: hostID}
	bes := backends.All(overlay.BackendConfig{Netlink: nl, Host: under, HostID: hostID, Instance: instance,
		StateDir: s.StateDir, WireGuard: s.WireGuard, Log: log})
	app.backends = bes
	owner := leaseOwner{hostID: hostID, underlay: under, backends: bes}
	// The overlay follows only its attached networks' pools, through a
	// watch of their own (sharded: lease/watcher.go), closed by Close.
	app.leaseWatch = reg.NewWatch(log)
	app.Overlay = overlay.NewManager(overlay.ManagerConfig{
		Leases: reg, Watch: app.leaseWatch, Netlink: nl, HostID: hostID, Instance: instance, Underlay: under,
		Backends: bes, Resync: s.Resync, Log: log, Observer: tel.Metrics,
	})
	tel.Metrics.SetState(app.metricsState)
	if app.Prober, err = app.newProber(); err != nil {
		app.leaseWatch.Close()
		local.Close()
		return nil, err
	}
	// Cluster networks need a store to share and this host's Docker API;
	// the loop starts in Background, never before the socket serves.
	var hooks driver.Cluster // a nil *cluster.Sync must stay a nil interface
	switch {
	case s.ConsulAddr == "":
		app.ClusterOff = "the embedded store has no other hosts (set CONSUL_HTTP_ADDR)"
	case s.DockerHost == "":
		app.ClusterOff = "FELT_DOCKER_HOST=off"
	default:
		eng := cluster.NewEngine(cluster.EngineConfig{Host: s.DockerHost, DriverName: s.DriverName, FallbackName: s.BareDriverName(), Log: log})
		app.Cluster = cluster.New(cluster.Config{Engine: eng, Records: reg, State: st, HostID: hostID, Resync: s.Resync, Log: log})
		hooks = app.Cluster
	}
	// The network driver first: the IPAM's ForgetHost removes its links.
	app.Driver = driver.New(driver.Config{
		State: st, Registry: reg, Netlink: nl, Firewall: fw, Overlay: app.Overlay, Backends: bes,
		Instance: instance, UnderlayMTU: under.MTU, Cluster: hooks, Log: log, DNS: s.DNS,
	})
	app.IPAM = ipam.New(ipam.Config{
		State: st, Registry: reg, Owner: owner.of, HostID: hostID, TTL: s.LeaseTTL, Log: log, HostNetworks: hostNetworks(nl, instance),
		ForgetHost: app.forgetHost,
	})
	log.Info("felt ready", "host", hostID, "store", storeName(s), "state", s.StateDir)
	return app, nil
}

// leaseOwner describes this host in the leases the IPAM takes: its host ID,
// its underlay address at the time, and what its backends publish for the
// pool.
type leaseOwner struct {
	hostID   string
	underlay Underlay
	backends *overlay.Backends
}

func (o leaseOwner) of(ctx context.Context, pool netip.Prefix) (lease.Owner, error) {
	ip, err := o.underlay.Addr()
	if err != nil {
		return lease.Owner{}, err
	}
	data, err := o.backends.LeaseData(pool)
	if err != nil {
		return lease.Owner{}, err
	}
	return lease.Owner{HostID: o.hostID, PublicIP: ip, BackendData: data}, nil
}

// forgetHost removes what an earlier felt of this host (its lease was taken
// over: ipam/forget.go) left: links, overlay devices and rules marked with
// its instance. The IPAM calls it; it reaches the network driver, overlay
// and firewall, which the IPAM does not know.
func (a *App) forgetHost(ctx context.Context, earlier string) error {
	old := earlier[:min(8, len(earlier))]
	if old == a.instance {
		return nil // nothing tells its objects from ours
	}
	return errors.Join(a.Driver.ForgetInstance(ctx, old), a.Overlay.ForgetInstance(old), a.Firewall.ForgetInstance(old))
}

func storeName(s Settings) string {
	if s.ConsulAddr != "" {
		return "consul " + s.ConsulAddr
	}
	return "embedded"
}

// Background runs recovery and the periodic loops until ctx ends.
func (a *App) Background(ctx context.Context) {
	a.serveMetrics(ctx)
	if err := a.Driver.Recover(ctx); err != nil {
		a.Log.Error("recovery incomplete", "err", err)
	}
	go a.Overlay.Run(ctx)
	if a.Prober != nil {
		go a.Prober.Run(ctx)
	}
	go a.Firewall.Keep(ctx, a.Settings.Resync) // repairs what Docker or anyone changed
	go a.runNames(ctx)                         // names.go
	if a.Cluster != nil {
		go a.Cluster.Run(ctx)
	} else {
		a.Log.Info("cluster networks off: networks stay on the host that created them", "why", a.ClusterOff)
	}
	a.renewLoop(ctx)
}

// Close releases the stores.
func (a *App) Close() {
	a.Overlay.Close()
	a.leaseWatch.Close() // its queries read the shared store
	if a.Shared != a.Local {
		a.Shared.Close()
	}
	a.Local.Close()
}
