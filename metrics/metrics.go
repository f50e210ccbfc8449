// Package metrics holds felt's Prometheus metrics, all defined in this one
// file, and the HTTP server that exposes them (server.go) with /healthz and
// /readyz. The Registry is passed in: felt never uses the client library's
// global default registry, so tests build a Metrics on a registry of their
// own and read exactly what one scenario did.
//
// The packages that feed it do not import Prometheus: the plugin's server
// calls ObserveRequest, the overlay Manager calls it through its
// overlay.Observer interface (Reconciled, PeersChanged), the shared store is
// wrapped (store.go), and what can be read from state when scraped (leases
// held, peers, the udp data path's counters) comes from a function the
// plugin supplies (state.go). Every label has a bounded set of values: API
// methods are felt's routes, pools and peers are those of the cluster.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are felt's metrics, registered on one Registry.
type Metrics struct {
	apiRequests *prometheus.CounterVec
	apiDuration *prometheus.HistogramVec

	reconciles        *prometheus.CounterVec
	reconcileErrors   prometheus.Counter
	reconcileDuration prometheus.Histogram
	peerChanges       *prometheus.CounterVec

	storeRequests       *prometheus.CounterVec
	storeDuration       *prometheus.HistogramVec
	storeWatchErrors    prometheus.Counter
	storeWatchReconnect prometheus.Counter

	// Peer probes (overlay/probe) set these; a peer has no series until
	// its first probe, and none after it leaves.
	peerReachable *prometheus.GaugeVec
	peerRTT       *prometheus.GaugeVec
	peerMTU       *prometheus.GaugeVec

	state *stateCollector
}

// Label values of outcomes.
const (
	OutcomeOK          = "ok"
	OutcomeError       = "error"        // the call failed (a felt error: 500)
	OutcomeBadRequest  = "bad_request"  // malformed or oversized request (4xx)
	OutcomeUnavailable = "unavailable"  // felt still starting, or its start failed (503)
	OutcomeUnknownCall = "unknown_call" // a call felt does not serve (404)
	OutcomeCanceled    = "canceled"     // the caller went away before an answer
	OutcomeNotFound    = "not_found"    // store: Get of a missing key
	OutcomeConflict    = "conflict"     // store: a compare-and-set lost
)

// apiBuckets span Docker's calls: a static answer in microseconds, a
// CreateNetwork waiting on Consul up to its 30 s timeout, a cluster create
// up to Docker's 60 s.
var apiBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// New defines felt's metrics and registers them on reg, with the Go
// runtime's and the process's collectors and felt_build_info for version.
func New(reg prometheus.Registerer, version string) *Metrics {
	m := &Metrics{
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "felt_api_requests_total",
			Help: "Docker plugin API requests served, by method (the call, e.g. NetworkDriver.CreateNetwork; \"other\" for calls felt does not serve) and outcome (ok, error, bad_request, unavailable, unknown_call, canceled).",
		}, []string{"method", "outcome"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "felt_api_request_duration_seconds",
			Help:    "Time felt took to answer Docker plugin API requests, by method.",
			Buckets: apiBuckets,
		}, []string{"method"}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "felt_overlay_reconciles_total",
			Help: "Overlay reconciles of every attached network (on lease changes, kernel events, lease expiry, retries and every FELT_RESYNC_INTERVAL), by outcome: ok, or error when a network did not reach its wanted state (retried with back-off).",
		}, []string{"outcome"}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "felt_overlay_reconcile_errors_total",
			Help: "Networks whose overlay reconcile failed (device repair or peer sync); see felt's log for the reason.",
		}),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "felt_overlay_reconcile_duration_seconds",
			Help:    "Time one overlay reconcile of every attached network took.",
			Buckets: prometheus.DefBuckets,
		}),
		peerChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "felt_overlay_peer_changes_total",
			Help: "Peers (other hosts' subnets) the overlay reconcile programmed (added) or removed, over all networks; a peer whose public IP changed counts once each.",
		}, []string{"change"}),
		storeRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "felt_store_requests_total",
			Help: "Requests to the shared store (Consul, or the embedded store without CONSUL_HTTP_ADDR), by op (get, list, put, cas, delete, delete_cas, txn, wait) and outcome (ok, not_found, conflict, error).",
		}, []string{"op", "outcome"}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "felt_store_request_duration_seconds",
			Help:    "Latency of shared store requests, by op; wait (blocking queries, which hang until a change) is not included.",
			Buckets: prometheus.DefBuckets,
		}, []string{"op"}),
		storeWatchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "felt_store_watch_errors_total",
			Help: "Blocking queries (the watches of leases and network records) that failed; each is retried.",
		}),
		storeWatchReconnect: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "felt_store_watch_reconnects_total",
			Help: "Watches that answered again after failing: the store came back, or connections were reset after this host's address changed.",
		}),
		peerReachable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "felt_peer_reachable",
			Help: "1 if the peer host answered the last probe through the overlay of the pool, 0 if not.",
		}, []string{"pool", "peer"}),
		peerRTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "felt_peer_rtt_seconds",
			Help: "Round-trip time of the last answered probe to the peer host through the overlay of the pool.",
		}, []string{"pool", "peer"}),
		peerMTU: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "felt_peer_mtu_ok",
			Help: "1 if the last full-size probe (the network's MTU, don't-fragment set) to the peer host through the overlay of the pool was answered, 0 if it was lost (an MTU black hole) or the peer is unreachable.",
		}, []string{"pool", "peer"}),
		state: newStateCollector(),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "felt_build_info",
		Help:        "Always 1; its version label is felt's version.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	build.Set(1)
	reg.MustRegister(m.apiRequests, m.apiDuration, m.reconciles, m.reconcileErrors, m.reconcileDuration, m.peerChanges,
		m.storeRequests, m.storeDuration, m.storeWatchErrors, m.storeWatchReconnect, m.peerReachable, m.peerRTT, m.peerMTU,
		m.state, build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Outcomes that should read 0 rather than be absent until they happen,
	// so that rate() and alerts on them work from the start.
	for _, o := range []string{OutcomeOK, OutcomeError} {
		m.reconciles.WithLabelValues(o)
	}
	for _, c := range []string{"added", "removed"} {
		m.peerChanges.WithLabelValues(c)
	}
	return m
}

// ObserveRequest counts one plugin API request. method must come from a
// bounded set (felt's routes, or "other"): the plugin's server guarantees it.
func (m *Metrics) ObserveRequest(method, outcome string, took time.Duration) {
	m.apiRequests.WithLabelValues(method, outcome).Inc()
	m.apiDuration.WithLabelValues(method).Observe(took.Seconds())
}

// Reconciled implements overlay.Observer: one reconcile of every network.
func (m *Metrics) Reconciled(took time.Duration, networks, failed int) {
	outcome := OutcomeOK
	if failed > 0 {
		outcome = OutcomeError
		m.reconcileErrors.Add(float64(failed))
	}
	m.reconciles.WithLabelValues(outcome).Inc()
	m.reconcileDuration.Observe(took.Seconds())
}

// PeersChanged implements overlay.Observer.
func (m *Metrics) PeersChanged(added, removed int) {
	m.peerChanges.WithLabelValues("added").Add(float64(added))
	m.peerChanges.WithLabelValues("removed").Add(float64(removed))
}

// SetPeer records a probe of peer (its host ID or public IP) in pool:
// reachable or not, and the round-trip time when it answered.
func (m *Metrics) SetPeer(pool, peer string, reachable bool, rtt time.Duration) {
	v := 0.0
	if reachable {
		v = 1
		m.peerRTT.WithLabelValues(pool, peer).Set(rtt.Seconds())
	}
	m.peerReachable.WithLabelValues(pool, peer).Set(v)
}

// SetPeerMTU records whether the full-size probe of peer in pool was
// answered.
func (m *Metrics) SetPeerMTU(pool, peer string, ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.peerMTU.WithLabelValues(pool, peer).Set(v)
}

// ForgetPeer removes a peer's series, when it leaves the pool: otherwise
// its last value would stay forever.
func (m *Metrics) ForgetPeer(pool, peer string) {
	m.peerReachable.DeleteLabelValues(pool, peer)
	m.peerRTT.DeleteLabelValues(pool, peer)
	m.peerMTU.DeleteLabelValues(pool, peer)
}
