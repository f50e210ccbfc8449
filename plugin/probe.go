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
	var t probeTargets
	return probe.New(probe.Config{Interval: a.Settings.ProbeEvery, Pinger: probe.NewICMP(),
		Targets: func() []probe.Target { return t.get(a) }, Observer: a.Metrics, Log: a.Log})
}

// probeTargets are the peers of every attached network as last built, and
// the overlay's PeersVersion they were built at. The prober asks every
// second; with 10,000 peers building them anew each time (a filtered copy
// of every lease per network, a target each) was most of what felt
// allocated, so they are rebuilt only when the version moved, and the
// prober is handed the very same slice otherwise (it skips its refresh).
// Used from the prober's one goroutine.
type probeTargets struct {
	version uint64
	built   bool
	ts      []probe.Target
}

// get returns the targets, rebuilt if the overlay's peers may have changed.
func (t *probeTargets) get(a *App) []probe.Target {
	v := a.Overlay.PeersVersion() // before the snapshot: a change after it moves it again
	if t.built && v == t.version {
		return t.ts
	}
	ts, known, final := a.probeTargets()
	if !known {
		return nil
	}
	// Kept only if every network's gateway was read: CreateNetwork
	// attaches a network (moving the version) before it records the
	// gateway, and a target built in between probes from the subnet's
	// first address until the version moves again.
	t.ts, t.version, t.built = ts, v, final
	return ts
}

// probeTargets are the peers of every attached network, from the overlay's
// snapshot (no store request): this host's gateway in each network from
// its local records, each peer's the first address of its subnet; known is
// false until the overlay has read every followed pool's leases; final is
// false if some network's gateway could not be read (its source guessed).
func (a *App) probeTargets() (ts []probe.Target, known, final bool) {
	nets, leases, known := a.Overlay.Snapshot()
	if !known {
		return nil, false, false
	}
	gws, err := a.gateways()
	final = err == nil
	for _, n := range nets {
		gw, ok := gws[n.ID]
		final = final && ok
		for _, l := range a.Overlay.Peers(n, leases) {
			ts = append(ts, peerTarget(n, gw, l))
		}
	}
	return ts, true, final
}

// gateways are this host's gateways by network ID, from the local store
// (the bridge's address: the subnet's first unless --gateway said
// otherwise).
func (a *App) gateways() (map[string]netip.Addr, error) {
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
	return gws, err
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
