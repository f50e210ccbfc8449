package plugin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/probe"
	"github.com/felt-net/felt/overlay/wireguard"
	"github.com/felt-net/felt/state"
)

// StatusPath is felt's own read-only call on the plugin socket, beside
// Docker's: `felt status` POSTs it and reads a Status as JSON. It never
// calls Docker, and its store requests share StatusStoreTimeout.
const StatusPath = "/Felt.Status"

// StatusStoreTimeout bounds the status call's store requests (a probe,
// then the network records for cluster names): a store that does not
// answer in time is reported unreachable.
const StatusStoreTimeout = 2 * time.Second

// Status states.
const (
	StatusRunning  = "running"
	StatusStarting = "starting" // the state store is not open yet
	StatusFailed   = "failed"   // start-up failed: Error says why
)

// Status is what `felt status` shows, and its --json.
type Status struct {
	State    string          `json:"state"`
	Error    string          `json:"error,omitempty"`
	Time     time.Time       `json:"time"`
	Host     HostStatus      `json:"host"`
	Store    StoreStatus     `json:"store"`
	Cluster  ClusterStatus   `json:"cluster"`
	Probes   ProbeStatus     `json:"probes"`
	InSync   bool            `json:"inSync"` // the overlay's last reconcile reached the wanted state
	Networks []NetworkStatus `json:"networks"`
	Drift    []Drift         `json:"drift"`
	// Problems are what is wrong, one line each with what to check; none
	// when all is well (felt status then exits 0).
	Problems []Problem `json:"problems"`
}

// HostStatus is this host.
type HostStatus struct {
	ID          string     `json:"id"`
	PublicIP    netip.Addr `json:"publicIP,omitzero"`
	Underlay    string     `json:"underlay,omitempty"` // the underlay interface
	UnderlayMTU int        `json:"underlayMTU,omitempty"`
	Version     string     `json:"version"`
	Error       string     `json:"error,omitempty"` // why the underlay could not be read
}

// StoreStatus is the shared store.
type StoreStatus struct {
	Kind       string `json:"kind"`           // consul or embedded
	Addr       string `json:"addr,omitempty"` // Consul's address
	Prefix     string `json:"prefix"`
	Reachable  bool   `json:"reachable"`
	Detail     string `json:"detail,omitempty"` // the error when unreachable
	LeasesRead bool   `json:"leasesRead"`       // the overlay has leases to work from
}

// ClusterStatus says whether cluster networks are on, and why not.
type ClusterStatus struct {
	On  bool   `json:"on"`
	Why string `json:"why,omitempty"`
}

// ProbeStatus is the peer prober's setting.
type ProbeStatus struct {
	On       bool    `json:"on"`
	Interval float64 `json:"intervalSeconds,omitempty"`
}

// NetworkStatus is one felt network on this host.
type NetworkStatus struct {
	ID            string       `json:"id"`             // Docker's network ID here
	Name          string       `json:"name,omitempty"` // the cluster declaration's name, if declared
	Pool          netip.Prefix `json:"pool"`
	Backend       string       `json:"backend"`
	VNI           int          `json:"vni,omitempty"`
	Port          int          `json:"port,omitempty"`
	DirectRouting bool         `json:"directRouting,omitempty"`
	MTU           int          `json:"mtu"`
	Internal      bool         `json:"internal,omitempty"`
	Subnet        netip.Prefix `json:"subnet"` // this host's lease
	Gateway       netip.Addr   `json:"gateway"`
	LeaseExpiry   time.Time    `json:"leaseExpiry,omitzero"` // zero: no lease of this host known
	Endpoints     int          `json:"endpoints"`
	Peers         []PeerStatus `json:"peers"`
	// WireGuard is the device of a wireguard network, as WireGuard itself
	// reports it; nil for other backends, or before the device is set up.
	WireGuard *WireGuardStatus `json:"wireguard,omitempty"`
}

// WireGuardStatus is a wireguard network's device on this host.
type WireGuardStatus struct {
	// Implementation is "kernel" (the kernel's WireGuard) or "userspace"
	// (wireguard-go in felt), per FELT_WIREGUARD and the kernel.
	Implementation string          `json:"implementation"`
	Device         string          `json:"device"`
	PublicKey      string          `json:"publicKey,omitempty"` // this host's
	ListenPort     int             `json:"listenPort,omitempty"`
	Peers          []WireGuardPeer `json:"peers"`
	Error          string          `json:"error,omitempty"` // why the device could not be read
}

// WireGuardPeer is one WireGuard peer of the device: the key the device
// accepts that peer's packets with, where it sends them, and the traffic.
type WireGuardPeer struct {
	PublicKey       string    `json:"publicKey"`
	Endpoint        string    `json:"endpoint,omitempty"`
	AllowedIPs      []string  `json:"allowedIPs"`
	LatestHandshake time.Time `json:"latestHandshake,omitzero"` // zero: none yet
	RxBytes         int64     `json:"rxBytes"`
	TxBytes         int64     `json:"txBytes"`
}

// PeerStatus is one other host's lease in a network's pool.
type PeerStatus struct {
	HostID      string       `json:"hostID"`
	PublicIP    netip.Addr   `json:"publicIP"`
	Subnet      netip.Prefix `json:"subnet"`
	Gateway     netip.Addr   `json:"gateway"` // what the probe pings
	LeaseExpiry time.Time    `json:"leaseExpiry,omitzero"`
	Expired     bool         `json:"expired,omitempty"` // its lease ran out: not a peer any more
	// Refused says why this host programs nothing for the lease (a public
	// IP no host can have, a subnet overlapping this host's): CheckPeer's
	// error; "" for a lease it accepts.
	Refused string `json:"refused,omitempty"`
	// Probed is false until the first probe (or with probing off); the
	// fields below mean something only when it is true.
	Probed     bool      `json:"probed"`
	Reachable  bool      `json:"reachable"`
	MTUOK      bool      `json:"mtuOK"`
	RTTSeconds float64   `json:"rttSeconds,omitempty"`
	Since      time.Time `json:"since,omitzero"`     // when reachability last changed
	LastProbe  time.Time `json:"lastProbe,omitzero"` // when the last probe ended
	Error      string    `json:"error,omitempty"`    // why the last probe failed
}

// Drift is a difference between the leases and the kernel.
type Drift struct {
	Network string `json:"network,omitempty"` // Docker's network ID; empty: every network
	What    string `json:"what"`
}

// Problem is one thing wrong, and what to check.
type Problem struct {
	What  string `json:"what"`
	Check string `json:"check"`
}

// Status gathers felt's status from memory, the local store, the kernel
// and the shared store (a reachability probe, then the network records),
// bounded by StatusStoreTimeout.
func (a *App) Status(ctx context.Context) Status {
	st := Status{State: StatusRunning, Time: time.Now().UTC(), InSync: a.Overlay.InSync()}
	st.Host = HostStatus{ID: a.hostID, Version: cmp.Or(a.Settings.Version, "dev")}
	var herr []error
	var err error
	if st.Host.PublicIP, err = a.Underlay.Addr(); err != nil {
		herr = append(herr, err)
	}
	if st.Host.Underlay, err = a.Underlay.Name(); err != nil {
		herr = append(herr, err)
	}
	if st.Host.UnderlayMTU, err = a.Underlay.MTU(); err != nil {
		herr = append(herr, err)
	}
	if err := errors.Join(herr...); err != nil {
		st.Host.Error = err.Error()
	}
	st.Cluster = ClusterStatus{On: a.Cluster != nil, Why: a.ClusterOff}
	if a.Prober != nil {
		st.Probes = ProbeStatus{On: true, Interval: a.Prober.Interval().Seconds()}
	}
	nets, leases, known := a.Overlay.Snapshot()
	// One budget for both store requests: a store that answers slowly
	// must not hold the call longer than one that does not answer.
	sctx, cancel := context.WithTimeout(ctx, StatusStoreTimeout)
	defer cancel()
	st.Store = a.storeStatus(sctx, known)
	records := a.networkRecords(sctx, &st.Store)

	local, err := a.State.Networks(ctx)
	if err != nil {
		st.Problems = append(st.Problems, Problem{What: "local state unreadable: " + err.Error(), Check: "felt's state directory (FELT_STATE_DIR)"})
	}
	endpoints := map[string]int{}
	if eps, err := a.State.Endpoints(ctx); err == nil {
		for _, ep := range eps {
			endpoints[ep.NetworkID]++
		}
	}
	attached := map[string]bool{}
	for _, n := range nets {
		attached[n.ID] = true
	}
	now := a.Registry.Now()
	for _, r := range local {
		ns := a.networkStatus(r, records[r.Pool], leases, now)
		ns.Endpoints = endpoints[r.ID]
		st.Networks = append(st.Networks, ns)
		if !attached[r.ID] {
			st.Drift = append(st.Drift, Drift{Network: r.ID, What: "recorded here but not attached to the overlay"})
		}
	}
	slices.SortFunc(st.Networks, func(x, y NetworkStatus) int { return cmp.Compare(x.Pool.String(), y.Pool.String()) })
	st.Drift = append(st.Drift, a.drift(nets, leases, known)...)
	if !st.InSync && known {
		st.Drift = append(st.Drift, Drift{What: "the overlay's last reconcile did not reach the wanted state (retried with back-off; felt's log says why)"})
	}
	st.Problems = append(st.Problems, problems(st, now)...)
	return st
}

// storeStatus asks the shared store once, bounded.
func (a *App) storeStatus(ctx context.Context, known bool) StoreStatus {
	s := StoreStatus{Kind: "embedded", Prefix: a.Settings.KVPrefix, LeasesRead: known, Reachable: true}
	if a.Settings.ConsulAddr != "" {
		s.Kind, s.Addr = "consul", a.Settings.ConsulAddr
	}
	// The bare store, as /readyz: a probe is not one of felt's requests.
	if _, err := a.Shared.Get(ctx, a.Settings.KVPrefix+"format"); err != nil && !errors.Is(err, kv.ErrNotFound) {
		s.Reachable, s.Detail = false, err.Error()
	}
	return s
}

// networkRecords are the shared network records by pool (for cluster
// names), when the store answered.
func (a *App) networkRecords(ctx context.Context, s *StoreStatus) map[netip.Prefix]lease.Network {
	out := map[netip.Prefix]lease.Network{}
	if !s.Reachable {
		return out
	}
	recs, err := a.Registry.ListNetworks(ctx)
	if err != nil {
		a.Log.Debug("status: network records", "err", err)
		return out
	}
	for _, r := range recs {
		out[r.Pool] = r
	}
	return out
}

// networkStatus is one network: its record here, its shared record, this
// host's lease and every other host's in the pool with its probe result.
func (a *App) networkStatus(r state.Network, rec lease.Network, leases []lease.Lease, now time.Time) NetworkStatus {
	ns := NetworkStatus{ID: r.ID, Pool: r.Pool, Backend: r.Backend, VNI: r.VNI, Port: r.Port, DirectRouting: r.DirectRouting,
		MTU: r.MTU, Internal: r.Internal, Subnet: r.Subnet, Gateway: r.Gateway, Peers: []PeerStatus{}}
	if rec.Cluster != nil {
		ns.Name = rec.Cluster.Name
	}
	on := overlay.Network{ID: r.ID, Pool: r.Pool, Subnet: r.Subnet, Backend: r.Backend, MTU: r.MTU}
	backend, _ := a.backends.Get(r.Backend) // nil for a backend not here: nothing of its own to refuse
	for _, l := range leases {
		if l.Pool != r.Pool {
			continue
		}
		if l.HostID == a.hostID || l.Subnet == r.Subnet {
			if l.Subnet == r.Subnet {
				ns.LeaseExpiry = l.Expiry
			}
			continue
		}
		p := PeerStatus{HostID: l.HostID, PublicIP: l.PublicIP, Subnet: l.Subnet, LeaseExpiry: l.Expiry, Expired: l.Expired(now)}
		if err := overlay.CheckPeer(on, l); err != nil {
			p.Refused = err.Error()
		} else if pc, ok := backend.(overlay.PeerChecker); ok {
			if err := pc.CheckPeerData(on, l); err != nil {
				p.Refused = err.Error()
			}
		}
		t := peerTarget(on, r.Gateway, l)
		p.Gateway = t.Dst
		if a.Prober != nil && !p.Expired && p.Refused == "" {
			if res, ok := a.Prober.Result(t); ok {
				p.Probed, p.Reachable, p.MTUOK, p.Error = res.Probed, res.Reachable, res.MTUOK, res.Err
				p.Since, p.LastProbe = res.Since.UTC(), res.Last.UTC()
				if res.Reachable {
					p.RTTSeconds = res.RTT.Seconds()
				}
			}
		}
		ns.Peers = append(ns.Peers, p)
	}
	slices.SortFunc(ns.Peers, func(x, y PeerStatus) int { return x.Subnet.Addr().Compare(y.Subnet.Addr()) })
	ns.WireGuard = a.wireGuardStatus(on)
	return ns
}

// wireGuardStatus reads n's WireGuard device, if its backend has one set
// up here.
func (a *App) wireGuardStatus(n overlay.Network) *WireGuardStatus {
	b, err := a.backends.Get(n.Backend)
	if err != nil {
		return nil
	}
	r, ok := b.(wireguard.StatusReporter)
	if !ok {
		return nil
	}
	st, ok, err := r.WireGuardStatus(n)
	if !ok {
		return nil
	}
	out := &WireGuardStatus{Implementation: st.Implementation, Device: st.Device, PublicKey: st.PublicKey,
		ListenPort: st.ListenPort, Peers: []WireGuardPeer{}}
	if err != nil {
		out.Error = err.Error()
	}
	for _, p := range st.Peers {
		wp := WireGuardPeer{PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: p.AllowedIPs,
			RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes}
		if !p.LatestHandshake.IsZero() {
			wp.LatestHandshake = p.LatestHandshake.UTC()
		}
		out.Peers = append(out.Peers, wp)
	}
	return out
}

// drift compares each attached network's kernel state with the leases:
// its bridge and overlay device exist, and felt's routes (proto 76) in
// the pool are exactly the live peers' subnets. A lease that changed a
// moment ago shows until the reconcile it started has run.
func (a *App) drift(nets []overlay.Network, leases []lease.Lease, known bool) []Drift {
	nl := a.Underlay.Netlink
	var out []Drift
	routes, rerr := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	for _, n := range nets {
		if _, err := nl.LinkByName(n.Bridge); err != nil {
			out = append(out, Drift{Network: n.ID, What: fmt.Sprintf("bridge %s missing: %v", n.Bridge, err)})
		}
		if b, err := a.backends.Get(n.Backend); err == nil {
			if dev := b.DeviceName(n); dev != "" {
				if _, err := nl.LinkByName(dev); err != nil {
					out = append(out, Drift{Network: n.ID, What: fmt.Sprintf("overlay device %s missing: %v", dev, err)})
				}
			}
		}
		if !known || rerr != nil {
			continue
		}
		want := map[netip.Prefix]lease.Lease{}
		for _, l := range a.Overlay.Peers(n, leases) {
			want[l.Subnet.Masked()] = l
		}
		have := map[netip.Prefix]bool{}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			ip, ok := netip.AddrFromSlice(r.Dst.IP.To4())
			ones, _ := r.Dst.Mask.Size()
			if !ok || !n.Pool.Contains(ip) {
				continue
			}
			if r.Type == unix.RTN_BLACKHOLE && netip.PrefixFrom(ip, ones) == n.Pool.Masked() {
				continue // the wireguard backend's blackhole of the whole pool: felt's, no peer's
			}
			have[netip.PrefixFrom(ip, ones)] = true
		}
		for s, l := range want {
			if !have[s] {
				out = append(out, Drift{Network: n.ID, What: fmt.Sprintf("no route to %s (peer %s, host %s)", s, l.PublicIP, shortHost(l.HostID))})
			}
		}
		for s := range have {
			if _, ok := want[s]; !ok {
				out = append(out, Drift{Network: n.ID, What: fmt.Sprintf("route to %s held by no live lease", s)})
			}
		}
	}
	if rerr != nil {
		out = append(out, Drift{What: "routes unreadable: " + rerr.Error()})
	}
	slices.SortFunc(out, func(x, y Drift) int { return cmp.Or(cmp.Compare(x.Network, y.Network), cmp.Compare(x.What, y.What)) })
	return out
}

// problems lists what is wrong in st, each with what to check.
func problems(st Status, now time.Time) []Problem {
	var ps []Problem
	add := func(what, check string) { ps = append(ps, Problem{What: what, Check: check}) }
	if st.Host.Error != "" {
		add("underlay: "+st.Host.Error, "FELT_IFACE / FELT_PUBLIC_IP, and that the interface is up with an IPv4 address")
	}
	if !st.Store.Reachable {
		what := "store unreachable (" + st.Store.Kind + " " + st.Store.Addr + "): " + st.Store.Detail
		if st.Store.LeasesRead {
			add(what+": working from last state", "is Consul up and reachable from this host? Existing containers keep working; creating networks and new hosts' leases need it")
		} else {
			add(what+": no leases read since felt started", "is Consul up and reachable from this host (CONSUL_HTTP_ADDR)? Peers are not programmed until it answers")
		}
	} else if !st.Store.LeasesRead && len(st.Networks) > 0 {
		add("leases not read yet", "felt is starting, or its lease watch fails (see felt's log)")
	}
	for _, n := range st.Networks {
		name := n.Pool.String()
		if n.Name != "" {
			name += " (" + n.Name + ")"
		}
		switch {
		case n.LeaseExpiry.IsZero() && st.Store.LeasesRead:
			add(fmt.Sprintf("network %s: no lease of this host's subnet %s in the store", name, n.Subnet),
				"felt takes it again at its next renewal; if it stays, see felt's log (renewal)")
		case !n.LeaseExpiry.IsZero() && now.After(n.LeaseExpiry):
			add(fmt.Sprintf("network %s: this host's lease of %s expired at %s", name, n.Subnet, n.LeaseExpiry.UTC().Format(time.RFC3339)),
				"lease expired: felt renews every third of FELT_LEASE_TTL; the store was unreachable for too long? Peers drop this host's routes")
		}
		if wg := n.WireGuard; wg != nil {
			wireGuardProblems(add, name, n, wg)
		}
		for _, p := range n.Peers {
			peer := fmt.Sprintf("network %s: peer %s (host %s, subnet %s)", name, p.PublicIP, shortHost(p.HostID), p.Subnet)
			switch {
			case p.Expired:
				add(peer+": lease expired at "+p.LeaseExpiry.UTC().Format(time.RFC3339), "lease expired: is that host down, or cut off from the store? Its routes are removed")
			case p.Refused != "":
				add(peer+": refused, not programmed: "+p.Refused,
					"that host's lease cannot be programmed, so no traffic goes to it: a public IP no host can have (check that host's FELT_PUBLIC_IP or the address felt found), a subnet overlapping this host's, or backend data this felt cannot use (another backend, or a broken felt, on that host?)")
			case !p.Probed:
			case !p.Reachable:
				add(peer+": unreachable over the overlay ("+n.Backend+")", probe.Hint(n.Backend))
			case !p.MTUOK:
				add(fmt.Sprintf("%s: reachable, but full-size packets (%d bytes) lost", peer, n.MTU),
					"MTU: full-size packets lost: lower -o com.docker.network.driver.mtu or fix the underlay MTU")
			}
		}
	}
	for _, d := range st.Drift {
		what := "drift: " + d.What
		if d.Network != "" {
			what = fmt.Sprintf("drift in network %s: %s", shortID(d.Network), d.What)
		}
		add(what, "felt repairs it at once or at the next resync (FELT_RESYNC_INTERVAL); if it stays, see felt's log")
	}
	return ps
}

// wireGuardProblems reports a wireguard device felt cannot read, and live
// peers the device has no WireGuard peer for: their traffic is dropped.
func wireGuardProblems(add func(what, check string), name string, n NetworkStatus, wg *WireGuardStatus) {
	if wg.Error != "" {
		add(fmt.Sprintf("network %s: WireGuard device %s unreadable: %s", name, wg.Device, wg.Error),
			"felt recreates the device at the next resync; if it stays, see felt's log")
		return
	}
	have := map[string]bool{}
	for _, p := range wg.Peers {
		for _, a := range p.AllowedIPs {
			have[a] = true
		}
	}
	for _, p := range n.Peers {
		if !p.Expired && p.Refused == "" && !have[p.Subnet.String()] { // a refused one is a problem of its own
			add(fmt.Sprintf("network %s: peer %s (host %s, subnet %s) has no WireGuard peer on %s: its traffic is dropped", name, p.PublicIP, shortHost(p.HostID), p.Subnet, wg.Device),
				"its lease has no usable or a duplicate WireGuard public key, or a subnet another lease overlaps (felt's log says which: \"peer skipped\"); was a state directory copied between hosts?")
		}
	}
}

// shortID is a Docker network ID as `docker network ls` shows it.
func shortID(id string) string { return id[:min(12, len(id))] }

// shortHost is a host ID as felt's logs, kernel marks and `felt leases`
// show it: its instance, the first 8 characters.
func shortHost(id string) string { return id[:min(8, len(id))] }
