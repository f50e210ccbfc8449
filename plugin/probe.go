package plugin

import (
	"context"
	"net/netip"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/probe"
)

// newProber builds the peer health prober (FELT_PROBE_INTERVAL; nil when
// 0): it probes the overlay Manager's peers, reported to felt's metrics.
func (a *App) newProber() (*probe.Prober, error) {
	if a.Settings.ProbeEvery <= 0 {
		return nil, nil
	}
	return probe.New(probe.Config{Interval: a.Settings.ProbeEvery, Pinger: probe.NewICMP(), Targets: a.probeTargets,
		Observer: a.Metrics, Log: a.Log})
}

// probeTargets are the peers of every attached network, from the overlay's
// snapshot (no store request): this host's gateway in each network from
// its local records, each peer's the first address of its subnet.
func (a *App) probeTargets() []probe.Target {
	nets, leases, known := a.Overlay.Snapshot()
	if !known {
		return nil
	}
	gws := a.gateways()
	var ts []probe.Target
	for _, n := range nets {
		for _, l := range a.Overlay.Peers(n, leases) {
			ts = append(ts, peerTarget(n, gws[n.ID], l))
		}
	}
	return ts
}

// gateways are this host's gateways by network ID, from the local store
// (the bridge's address: the subnet's first unless --gateway said
// otherwise).
func (a *App) gateways() map[string]netip.Addr {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	gws := map[string]netip.Addr{}
	recs, err := a.State.Networks(ctx)
	if err != nil {
		a.Log.Debug("probes: local network records", "err", err)
	}
	for _, r := range recs {
		gws[r.ID] = r.Gateway
	}
	return gws
}

// peerTarget is the probe of peer l in n, from src (this host's gateway;
// the subnet's first address if unknown). The peer's gateway is taken to
// be its subnet's first address, felt's default: leases do not record a
// --gateway given on the peer.
func peerTarget(n overlay.Network, src netip.Addr, l lease.Lease) probe.Target {
	if !src.IsValid() {
		src = ipnet.Nth(n.Subnet.Masked(), 1)
	}
	return probe.Target{Network: n.ID, Pool: n.Pool, Backend: n.Backend, HostID: l.HostID, PublicIP: l.PublicIP,
		Subnet: l.Subnet, Src: src, Dst: ipnet.Nth(l.Subnet.Masked(), 1), MTU: n.MTU}
}
