package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// State is what felt serves at the moment of a scrape, read from memory
// (the overlay's latest lease snapshot and attached networks, the data
// path's counters): a scrape never waits on the store.
type State struct {
	LeasesHeld  int  // live leases held by this host
	LeasesKnown int  // live leases of every host, as last read from the store
	LeasesRead  bool // the store has answered at least once since start
	InSync      bool // the overlay's last reconcile reached the wanted state
	Networks    []NetworkState
}

// NetworkState is one attached felt network.
type NetworkState struct {
	Pool    string // the network's pool (its --subnet)
	Backend string
	Peers   int // other hosts holding a live lease of the pool
	// DataPath is the traffic through felt's own data path (udp); nil for
	// backends the kernel carries (vxlan, host-gw).
	DataPath *DataPath
	// WireGuard are the peers of the network's WireGuard device (wireguard
	// backend), as wgctrl reads them; nil for other backends.
	WireGuard []WireGuardPeer
}

// WireGuardPeer is one peer of a network's WireGuard device.
type WireGuardPeer struct {
	Peer             string // the peer host as felt_peer_reachable names it: its lease's public IP (its subnet when no live lease names it)
	RxBytes, TxBytes int64
	LastHandshake    time.Time // zero: no handshake yet
}

// DataPath counts a network's traffic through felt's userspace data path.
type DataPath struct {
	TxPackets, TxBytes, TxDropped uint64
	RxPackets, RxBytes, RxDropped uint64
}

// SetState installs the function a scrape reads State from (the plugin
// passes one over its overlay Manager). Until then these metrics are absent.
func (m *Metrics) SetState(f func() State) { m.state.f.Store(&f) }

var (
	descLeasesHeld = prometheus.NewDesc("felt_leases_held",
		"Live subnet leases this host holds (one per felt network's pool).", nil, nil)
	descLeasesKnown = prometheus.NewDesc("felt_leases_known",
		"Live subnet leases of every host, as this host last read them from the store.", nil, nil)
	descLeasesRead = prometheus.NewDesc("felt_leases_read",
		"1 once the store has answered the lease watch since felt started (the overlay then programs peers), else 0.", nil, nil)
	descInSync = prometheus.NewDesc("felt_overlay_in_sync",
		"1 if the last overlay reconcile brought every attached network to its wanted state from the leases, else 0.", nil, nil)
	descNetworks = prometheus.NewDesc("felt_overlay_networks",
		"felt networks attached to the overlay on this host.", nil, nil)
	descPeers = prometheus.NewDesc("felt_overlay_peers",
		"Other hosts holding a live lease of the network's pool: the peers the overlay programs.", []string{"pool", "backend"}, nil)
	descDPPackets = prometheus.NewDesc("felt_dataplane_packets_total",
		"Packets carried by felt's userspace data path (udp backend), by direction: tx (read from the TUN, sent to a peer) or rx (received from a peer, written to the TUN). A TCP super-packet counts once.", []string{"pool", "backend", "direction"}, nil)
	descDPBytes = prometheus.NewDesc("felt_dataplane_bytes_total",
		"Bytes of the IP packets carried by felt's userspace data path (without encapsulation), by direction.", []string{"pool", "backend", "direction"}, nil)
	descWGRx = prometheus.NewDesc("felt_wireguard_peer_receive_bytes_total",
		"Bytes received from the peer host through the network's WireGuard device (wireguard backend), as WireGuard counts them: encrypted, handshakes and keepalives included. Starts again at 0 when the device or the peer is recreated.", []string{"pool", "peer"}, nil)
	descWGTx = prometheus.NewDesc("felt_wireguard_peer_transmit_bytes_total",
		"Bytes sent to the peer host through the network's WireGuard device (wireguard backend), as WireGuard counts them: encrypted, handshakes and keepalives included. Starts again at 0 when the device or the peer is recreated.", []string{"pool", "peer"}, nil)
	descWGHandshake = prometheus.NewDesc("felt_wireguard_peer_last_handshake_age_seconds",
		"Seconds since the last WireGuard handshake with the peer host (wireguard backend); absent until the first. A session rekeys every 2 minutes while traffic flows: a much older handshake with traffic wanted means the peer is not answering.", []string{"pool", "peer"}, nil)
	descDPDropped = prometheus.NewDesc("felt_dataplane_dropped_total",
		"Packets felt's userspace data path dropped, by direction: tx (not IPv4, no peer holds the destination, or the send failed), rx (forged source, or the TUN refused the write).", []string{"pool", "backend", "direction"}, nil)
)

// stateCollector turns State into metrics at scrape time.
type stateCollector struct {
	f atomic.Pointer[func() State]
}

func newStateCollector() *stateCollector { return &stateCollector{} }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLeasesHeld, descLeasesKnown, descLeasesRead, descInSync, descNetworks, descPeers, descDPPackets, descDPBytes, descDPDropped, descWGRx, descWGTx, descWGHandshake} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.f.Load()
	if f == nil {
		return
	}
	s := (*f)()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descLeasesHeld, float64(s.LeasesHeld))
	gauge(descLeasesKnown, float64(s.LeasesKnown))
	gauge(descLeasesRead, bool01(s.LeasesRead))
	gauge(descInSync, bool01(s.InSync))
	gauge(descNetworks, float64(len(s.Networks)))
	seen := map[string]bool{} // two networks on one pool would be a duplicate series: the scrape would fail
	for _, n := range s.Networks {
		if seen[n.Pool] {
			continue
		}
		seen[n.Pool] = true
		gauge(descPeers, float64(n.Peers), n.Pool, n.Backend)
		if dp := n.DataPath; dp != nil {
			counter(descDPPackets, dp.TxPackets, n.Pool, n.Backend, "tx")
			counter(descDPPackets, dp.RxPackets, n.Pool, n.Backend, "rx")
			counter(descDPBytes, dp.TxBytes, n.Pool, n.Backend, "tx")
			counter(descDPBytes, dp.RxBytes, n.Pool, n.Backend, "rx")
			counter(descDPDropped, dp.TxDropped, n.Pool, n.Backend, "tx")
			counter(descDPDropped, dp.RxDropped, n.Pool, n.Backend, "rx")
		}
		peers := map[string]bool{} // one series per peer: two leases of one host would be a duplicate
		for _, p := range n.WireGuard {
			if peers[p.Peer] {
				continue
			}
			peers[p.Peer] = true
			counter(descWGRx, uint64(max(p.RxBytes, 0)), n.Pool, p.Peer)
			counter(descWGTx, uint64(max(p.TxBytes, 0)), n.Pool, p.Peer)
			if !p.LastHandshake.IsZero() {
				gauge(descWGHandshake, max(time.Since(p.LastHandshake).Seconds(), 0), n.Pool, p.Peer)
			}
		}
	}
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
