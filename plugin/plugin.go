package plugin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/driver"
	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/state"
	"github.com/felt-net/felt/storeformat"
)

// Listen opens the plugin socket. It comes first at start-up: Docker gives a
// starting plugin a few seconds to answer before disabling it.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("stale socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return l, nil
}

// Run serves the plugin until ctx ends.
func Run(ctx context.Context, s Settings, log *slog.Logger) error {
	l, err := Listen(s.Socket)
	if err != nil {
		return err
	}
	srv := NewServer(log, s.ReadyWait)
	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(l) }()
	log.Info("listening", "socket", s.Socket)

	app, err := Build(ctx, s, log)
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
	srv.SetReady(Drivers{Network: app.Driver, IPAM: app.IPAM})

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
	Underlay Underlay
	Firewall *firewall.Firewall
	Log      *slog.Logger
}

// Build opens the stores and builds the drivers. It does not contact Consul:
// felt starts and serves existing containers while Consul is unreachable.
func Build(ctx context.Context, s Settings, log *slog.Logger) (*App, error) {
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
	reg := lease.NewRegistry(storeformat.Guard(storeformat.Area{Store: shared, Prefix: s.KVPrefix, Format: storeformat.Shared(),
		Writer: writer, Where: sharedWhere, Remedy: "give this felt another FELT_KV_PREFIX"}), s.KVPrefix, nil)
	under := Underlay{Iface: s.Iface, PublicIP: s.PublicIP, Netlink: nl}
	instance := hostID[:8]
	fw, err := firewall.New(netns.None(), instance, s.Iptables, log)
	if err != nil {
		local.Close()
		return nil, err
	}
	app := &App{Settings: s, Local: local, Shared: shared, State: st, Registry: reg, Underlay: under, Log: log}
	app.Firewall = fw
	owner := func(ctx context.Context, pool netip.Prefix) (lease.Owner, error) {
		ip, err := under.Addr()
		if err != nil {
			return lease.Owner{}, err
		}
		return lease.Owner{HostID: hostID, PublicIP: ip, VtepMAC: overlay.VtepMAC(hostID, pool).String()}, nil
	}
	app.Overlay = overlay.NewManager(overlay.ManagerConfig{
		Leases: reg, Netlink: nl, HostID: hostID, Instance: instance, Underlay: under,
		Resync: s.Resync, Log: log,
	})
	var drv *driver.Driver
	app.IPAM = ipam.New(ipam.Config{
		State: st, Registry: reg, Owner: owner, HostID: hostID, TTL: s.LeaseTTL, Log: log, HostNetworks: hostNetworks(nl, instance),
		HasNetwork: func(ctx context.Context, pool netip.Prefix) (bool, error) { return drv.HasNetworkForPool(ctx, pool) },
		// An earlier felt of this host (its lease was taken over: ipam/forget.go)
		// left links, overlay devices and rules marked with its instance.
		ForgetHost: func(ctx context.Context, earlier string) error {
			if old := earlier[:min(8, len(earlier))]; old != instance { // else nothing tells its objects from ours
				return errors.Join(drv.ForgetInstance(ctx, old), app.Overlay.ForgetInstance(old), fw.ForgetInstance(old))
			}
			return nil
		},
	})
	drv = driver.New(driver.Config{
		State: st, Registry: reg, IPAM: app.IPAM, Netlink: nl, Firewall: fw, Overlay: app.Overlay,
		Instance: instance, UnderlayMTU: under.MTU, Log: log,
	})
	app.Driver = drv
	log.Info("felt ready", "host", hostID, "store", storeName(s), "state", s.StateDir)
	return app, nil
}

func storeName(s Settings) string {
	if s.ConsulAddr != "" {
		return "consul " + s.ConsulAddr
	}
	return "embedded"
}

// Background runs recovery and the periodic loops until ctx ends.
func (a *App) Background(ctx context.Context) {
	if err := a.Driver.Recover(ctx); err != nil {
		a.Log.Error("recovery incomplete", "err", err)
	}
	go a.Overlay.Run(ctx)
	go a.Firewall.Keep(ctx, a.Settings.Resync) // repairs what Docker or anyone changed
	a.renewLoop(ctx)
}

// renewLoop renews this host's leases well before they expire: every third
// of the TTL (at most hourly, like flannel's "1 h before"), a minute (or
// less, for short test TTLs) after a failure, and at once when the host's
// public IP changed (peers learn the new address without a restart) or a
// lease vanished from the store (peers would drop their routes to it).
func (a *App) renewLoop(ctx context.Context) {
	every := min(a.Settings.LeaseTTL/3, time.Hour)
	retry := min(time.Minute, a.Settings.LeaseTTL/10)
	check := min(every, a.Settings.Resync)
	var lastIP netip.Addr
	var due time.Time // zero: renew now
	for {
		ip, _ := a.Underlay.Addr()
		changed := ip != lastIP
		if changed && lastIP.IsValid() {
			a.Log.Info("public IP changed; updating leases", "from", lastIP, "to", ip)
			if c, ok := a.Shared.(interface{ ResetConnections() }); ok {
				// Connections from the old address are dead: abort what
				// waits on them (the overlay's watch, say), which then
				// retries on fresh ones.
				c.ResetConnections()
			}
			a.Overlay.Kick() // devices bound to the old address (VTEP local IP) now
		}
		renew := changed || !time.Now().Before(due)
		if !renew {
			renew, _ = a.IPAM.LeasesMissing(ctx) // after the IP check: it may wait on the store
		}
		if renew {
			if err := a.Driver.Reassert(ctx); err != nil {
				a.Log.Warn("network records not restored", "err", err)
			}
			if err := a.IPAM.Renew(ctx); err != nil {
				due = time.Now().Add(retry)
			} else {
				due, lastIP = time.Now().Add(every), ip
			}
			if err := a.IPAM.ForgetEarlier(ctx); err != nil { // after takeovers in renewals
				a.Log.Error("leftovers of an earlier felt of this host not removed; retried at the next renewal", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(check):
		}
	}
}

// Close releases the stores.
func (a *App) Close() {
	a.Overlay.Close()
	if a.Shared != a.Local {
		a.Shared.Close()
	}
	a.Local.Close()
}
