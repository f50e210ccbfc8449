package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/metrics"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/udp/dataplane"
	"github.com/felt-net/felt/overlay/wireguard"
)

// serveMetrics starts the FELT_METRICS_ADDR server, if set, until ctx ends.
// A port it cannot bind is logged, not fatal: monitoring must not take
// container networking down with it.
func (a *App) serveMetrics(ctx context.Context) {
	if a.Settings.MetricsOn == "" {
		return
	}
	srv, err := metrics.Listen(a.Settings.MetricsOn, metrics.Handler(a.Gatherer, a, a.Log))
	if err != nil {
		a.Log.Error("metrics server not started", "err", err)
		return
	}
	a.Log.Info("serving metrics", "addr", srv.Addr(), "paths", "/metrics /healthz /readyz")
	go func() {
		if err := srv.Serve(ctx); err != nil {
			a.Log.Error("metrics server stopped", "err", err)
		}
	}()
}

// Ready implements metrics.Readiness (/readyz): the shared store answers,
// or felt works from the leases it read before; and the overlay is in
// sync with the leases.
func (a *App) Ready(ctx context.Context) []metrics.Check {
	_, _, known := a.Overlay.Snapshot()
	store := metrics.Check{Name: "store", OK: true, Detail: storeName(a.Settings) + " answers"}
	// Any key will do: not found is an answer. The bare store, so that
	// probes do not count as felt's own requests.
	if _, err := a.Shared.Get(ctx, a.Settings.KVPrefix+"format"); err != nil && !errors.Is(err, kv.ErrNotFound) {
		store.Detail = err.Error()
		if known {
			store.Detail += " (working from the leases read before)"
		} else {
			store.OK = false
			store.Detail += " (and no leases read since felt started)"
		}
	}
	ov := metrics.Check{Name: "overlay", OK: a.Overlay.InSync()}
	nets, _, _ := a.Overlay.Snapshot()
	if ov.OK {
		ov.Detail = fmt.Sprintf("in sync with the leases (networks attached: %d)", len(nets))
	} else {
		ov.Detail = fmt.Sprintf("not in sync (networks attached: %d): the leases were not read yet, or a reconcile is failing (see felt's log)", len(nets))
	}
	return []metrics.Check{store, ov}
}

// statsReporter is a backend with a userspace data path (udp).
type statsReporter interface {
	Stats(n overlay.Network) (dataplane.Stats, bool)
}

// metricsState is what a scrape reads: the overlay's snapshot, no store
// request.
func (a *App) metricsState() metrics.State {
	nets, leases, known := a.Overlay.Snapshot()
	now := a.Registry.Now()
	st := metrics.State{LeasesRead: known, InSync: a.Overlay.InSync()}
	for _, l := range leases {
		if l.Expired(now) {
			continue
		}
		st.LeasesKnown++
		if l.HostID == a.hostID {
			st.LeasesHeld++
		}
	}
	for _, n := range nets {
		ns := metrics.NetworkState{Pool: n.Pool.String(), Backend: n.Backend, Peers: len(a.Overlay.Peers(n, leases))}
		if b, err := a.backends.Get(n.Backend); err == nil {
			if r, ok := b.(statsReporter); ok {
				if s, ok := r.Stats(n); ok {
					ns.DataPath = &metrics.DataPath{TxPackets: s.TxPackets, TxBytes: s.TxBytes, TxDropped: s.TxDropped,
						RxPackets: s.RxPackets, RxBytes: s.RxBytes, RxDropped: s.RxDropped}
				}
			}
			if r, ok := b.(wireguard.StatusReporter); ok {
				ns.WireGuard = wireGuardPeers(r, n, a.Overlay.Peers(n, leases))
			}
		}
		st.Networks = append(st.Networks, ns)
	}
	return st
}

// wireGuardPeers are the peers of n's WireGuard device for the metrics
// (one wgctrl read of the device, as felt status does), each named by the
// public IP of the live lease whose subnet it is allowed (as the probes
// name peers), else by that subnet. A device that cannot be read has none.
func wireGuardPeers(r wireguard.StatusReporter, n overlay.Network, peers []lease.Lease) []metrics.WireGuardPeer {
	st, ok, err := r.WireGuardStatus(n)
	if !ok || err != nil {
		return nil
	}
	bySubnet := map[string]string{}
	for _, l := range peers {
		bySubnet[l.Subnet.String()] = l.PublicIP.String()
	}
	out := make([]metrics.WireGuardPeer, 0, len(st.Peers))
	for _, p := range st.Peers {
		name := p.PublicKey
		if len(p.AllowedIPs) > 0 {
			name = p.AllowedIPs[0]
			if ip, ok := bySubnet[name]; ok {
				name = ip
			}
		}
		out = append(out, metrics.WireGuardPeer{Peer: name, RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes, LastHandshake: p.LatestHandshake})
	}
	return out
}
