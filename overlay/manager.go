package overlay

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/lease"
)

// ManagerConfig holds the Manager's dependencies.
type ManagerConfig struct {
	// Leases are the shared leases (a *lease.Registry): Check reads a
	// pool's, the Manager removes expired ones and judges expiry by its
	// clock.
	Leases LeaseSource
	// Watch follows the leases of the attached networks' pools (a
	// *lease.Watch from Leases' NewWatch); the Manager sets its pools and
	// reads it in Run. Nil: no lease is ever read, and the Manager only
	// repairs devices (tests that need no peers).
	Watch   LeaseWatch
	Netlink *netlink.Handle
	HostID  string
	// Instance marks the overlay devices of this felt (OwnerAlias); empty
	// means the first 8 characters of HostID, as the plugin derives it.
	Instance string
	// Underlay is the host's underlay. When it implements NetNSHost, kernel
	// events are followed in that namespace, else in the current one.
	Underlay Host
	// Backends are the registered backends (overlay/backends.All, which
	// plugin.Build passes).
	Backends *Backends
	// Resync is the period of the full reconcile that runs besides events.
	Resync time.Duration
	Log    *slog.Logger
	// Observer is told what reconciles do (felt's metrics); nil: nobody.
	Observer Observer
}

// Observer is told what the Manager does, for metrics. It is an interface
// of plain values so that the overlay does not depend on a metrics library;
// its methods are called on the reconcile path and must not block.
type Observer interface {
	// Reconciled: one reconcile pass, which took took, reconciled networks
	// networks (those that needed it: dirty.go; every attached one in a
	// full pass); failed of them did not reach their wanted state
	// (retried). A wake-up that found nothing to do is no pass.
	Reconciled(took time.Duration, networks, failed int)
	// PeersChanged: a network's sync added and removed peers (subnets, or
	// a subnet's public IP) compared with its previous successful sync.
	PeersChanged(added, removed int)
}

// Manager keeps every attached network's overlay in line with the leases.
// One lease watch (leasewatch.go) follows the attached networks' pools.
// Each trigger marks the networks it concerns dirty (dirty.go) and the
// loop in Run reconciles only those: an Attach its network, a lease change
// the networks whose peers it changed, a kernel event the network whose
// device it touched (kernelevents.go), the expiry of a lease the networks
// it was a peer of, a failure the failed network. The resync tick, the
// first complete lease answer, Kick, and kernel events that concern every
// network (the underlay's) reconcile every network.
type Manager struct {
	cfg      ManagerConfig
	nl       *netlink.Handle
	instance string
	mu       sync.Mutex
	networks map[string]*attached // by Docker network ID
	// dirty is the work the next pass takes (dirty.go), under mu.
	dirty dirtySet
	// known are the followed pools whose leases the watch has answered
	// with (leasewatch.go), under mu: a network of a pool not known yet
	// gets its device repaired, never a Sync from an absent answer.
	known   map[netip.Prefix]bool
	wake    chan struct{} // the loop's trigger: there may be work
	closed  chan struct{} // closed by Close
	once    sync.Once
	runMu   sync.Mutex
	running []chan struct{} // one per Run under way, closed when it returns

	removing atomic.Bool // expired leases are being removed from the store

	// poolsMu serializes SetPools calls, each made from the attached set
	// as it is then, so that the last call made is the latest set, and
	// the watch's answers with them (apply).
	poolsMu sync.Mutex
	pools   []netip.Prefix // as last passed to the watch
	// followed is, for each pool of pools, the watch's generation
	// (lease.Update.Gen) when it was last followed afresh: an answer of an
	// older generation about it was made before, of the pool as the watch
	// followed it then (apply).
	followed map[netip.Prefix]uint64

	// Under leasesMu (taken after mu when both are held): the followed
	// pools' leases as the watch told them (leasewatch.go), kept from its
	// Resets and changes; complete: an answer came in which every
	// followed pool had answered (lease.Update.Complete) since Run
	// started (it stays true: a pool followed since has its own
	// knowledge, known, and Snapshot's "leases read" should not flicker
	// with each Attach of a new pool); the expiry heap of the leases not
	// expired yet; the expired ones removeExpired removes from the store;
	// and Snapshot's list of every lease, made on demand.
	leasesMu sync.Mutex
	leases   map[netip.Prefix]*poolLeases
	complete bool
	expiries expiryHeap
	expired  map[leaseID]lease.Lease
	all      []lease.Lease

	// version counts what can change Snapshot's networks or the peers
	// among its leases: PeersVersion.
	version atomic.Uint64

	// refused are the leases CheckPeer refused, logged once (peerfilter.go;
	// its own lock).
	refused refusals
	// kernelOff: kernel events are not followed (export_test.go: unit
	// tests that count reconciles in a namespace they share with others).
	kernelOff bool
}

// attached is one network the Manager serves. Its lock is held through a
// whole reconcile of the network and through its teardown, so the two never
// overlap, and Detach sets gone under it: a reconcile that took the network
// from the list before a Detach finds it gone and creates nothing, instead
// of making the VTEP again after the teardown.
type attached struct {
	mu   sync.Mutex
	n    Network
	gone bool
	// synced are the peers of the last sync (full or delta), recorded as
	// it starts: to tell whether a lease change changed them (dirty.go),
	// what a delta is (delta.go) and the Observer what changed. hasSynced
	// says the last one succeeded, since the network was attached: only
	// then is a delta enough. Written with mu and peersMu held; kernel
	// events read it under peersMu alone (wantsRoute).
	synced    peerSet
	hasSynced bool
	peersMu   sync.Mutex
	// pending are the subnets of the network's pool whose leases changed
	// (or expired) since its last sync, which a delta looks at; pendingAll:
	// the pool was told whole since, so every subnet. Under the Manager's
	// leasesMu.
	pending    map[netip.Prefix]bool
	pendingAll bool

	// Under the Manager's mutex (mu may be held through a long reconcile):
	// device is the backend's DeviceName(n), for deviceUser and kernel
	// events; view is n as last attached (Snapshot, dirty marks by pool).
	device string
	view   Network
	// gen counts this network's Attaches: a pass that began before the
	// latest one does not claim the network in line (its n may be old).
	gen uint64
	// inLine: the network's last reconcile brought it to its wanted state,
	// its peers from the watch's answer for its pool (InSync). failed: it
	// did not reach it (retried alone, after reconcileRetry).
	inLine, failed bool
}

// NewManager returns a Manager; call Run to start reconciling.
func NewManager(cfg ManagerConfig) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	instance := instanceOf(cfg.Instance, cfg.HostID)
	return &Manager{cfg: cfg, nl: orDefault(cfg.Netlink), instance: instance, networks: map[string]*attached{},
		known: map[netip.Prefix]bool{}, followed: map[netip.Prefix]uint64{}, wake: make(chan struct{}, 1), closed: make(chan struct{}),
		leases: map[netip.Prefix]*poolLeases{}, expired: map[leaseID]lease.Lease{}}
}

func (m *Manager) backend(name string) (Backend, error) {
	return m.cfg.Backends.Get(name)
}

// Attach sets up n's device and schedules a reconcile of n alone (a Sync
// once its pool's leases are known); the watch is told to follow n's pool. It does not wait for the store: peers are
// programmed as soon as the pool's leases are read. n stays attached when
// its setup fails, so the reconciler retries it (a start-up before the
// underlay is ready, say); the driver detaches a network whose creation
// failed.
func (m *Manager) Attach(ctx context.Context, n Network) error {
	b, err := m.backend(n.Backend)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if other := m.deviceUser(b, n); other != "" {
		m.mu.Unlock()
		return fmt.Errorf("network %s: its device %s is already network %s's on this host "+
			"(two felt networks with one VNI or pool: the store's records are inconsistent; remove one network)",
			n.ID, b.DeviceName(n), other)
	}
	a := m.networks[n.ID]
	if a == nil {
		a = &attached{n: n} // complete before a reconcile can see it
		m.networks[n.ID] = a
	}
	a.device, a.view = b.DeviceName(n), n
	a.gen++
	a.inLine = false
	m.version.Add(1)
	m.mu.Unlock()
	m.followPools()
	a.mu.Lock()
	if a.gone {
		a.mu.Unlock()
		return fmt.Errorf("network %s was detached while being attached", n.ID)
	}
	a.n, a.hasSynced = n, false // synced peers were n's before, if any
	err = b.Setup(ctx, n)
	a.mu.Unlock()
	// Marked only now, so no pass takes the mark to a reconcile of the
	// network as it was before this Attach. Its device is made: the pass
	// syncs it once its pool's leases are known (at once if they are),
	// and a failed Setup is reconciled again, then retried.
	how := reconcileIfPeersChanged
	if err != nil {
		how = reconcileAlways
	}
	m.mu.Lock()
	if m.networks[n.ID] == a {
		m.dirty.mark(n.ID, how)
	}
	m.mu.Unlock()
	m.poke()
	return err
}

// Detach forgets n and removes its overlay state. It waits for a reconcile
// of n under way to finish, and none starts after it. No other network is
// reconciled for it: the kernel events of its teardown concern no attached
// network (kernelevents.go).
func (m *Manager) Detach(ctx context.Context, n Network) error {
	m.mu.Lock()
	a := m.networks[n.ID]
	delete(m.networks, n.ID)
	m.dirty.forget(n.ID)
	m.version.Add(1)
	m.mu.Unlock()
	m.followPools()
	if a != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.gone = true
	}
	b, err := m.backend(n.Backend)
	if err != nil {
		return err
	}
	return b.Teardown(ctx, n)
}

// deviceUser returns the ID of another attached network whose device has
// n's device's name, or "". Both cannot be served: each reconcile would
// recreate the device as the other's, and each recreation's kernel events
// would start the next reconcile, forever. Called with m.mu held.
func (m *Manager) deviceUser(b Backend, n Network) string {
	name := b.DeviceName(n)
	if name == "" {
		return ""
	}
	for id, a := range m.networks {
		if id != n.ID && a.device == name {
			return id
		}
	}
	return ""
}

func (m *Manager) isAttached(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.networks[id]
	return ok
}

// Kick asks for a reconcile of every attached network soon (a full
// repair: the plugin calls it when this host's address changed); calls
// coalesce.
func (m *Manager) Kick() {
	m.mu.Lock()
	m.dirty.markAll()
	m.mu.Unlock()
	m.poke()
}

// poke wakes the loop to take the work marked dirty; pokes coalesce.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Close stops Run and waits for it to return, so that the caller may then
// close the store Run reads.
func (m *Manager) Close() {
	m.once.Do(func() { close(m.closed) })
	m.runMu.Lock()
	running := m.running
	m.runMu.Unlock()
	for _, done := range running {
		<-done
	}
}

// Run reconciles what each lease change, kernel change, lease expiry and
// failure made dirty, and every network every Resync, until ctx ends or
// Close. Networks present at start must be attached before: devices of
// networks that are not are removed. Run returns once everything it
// started has stopped (kernel subscriptions closed, no store request under
// way), so its caller may close the store.
func (m *Manager) Run(ctx context.Context) {
	done := make(chan struct{})
	m.runMu.Lock()
	m.running = append(m.running, done)
	m.runMu.Unlock()
	defer close(done) // last: after wg.Wait
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, deferred below
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() {
		select {
		case <-m.closed:
			cancel()
		case <-ctx.Done():
		}
	})
	if m.cfg.Watch != nil {
		wg.Go(func() { m.watch(ctx) })
	}
	if !m.kernelOff {
		wg.Go(func() { m.watchKernel(ctx) })
	}
	m.sweep()
	tick := time.NewTicker(m.cfg.Resync)
	defer tick.Stop()
	expiry := time.NewTimer(time.Hour)
	expiry.Stop()
	defer expiry.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	retryIn := reconcileRetry
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// The resync: strays swept, every network reconciled from the
			// watch's latest answer. There is no listing of the store any
			// more: the watch's blocking queries answer with the followed
			// pools' current records after every change, and it retries
			// the store itself, so its answer is as fresh as a listing's;
			// a listing of every pool on every host each resync costs
			// O(all leases in the store), the load issue #14 is about; and
			// a listing beside the watch raced it (an older listing could
			// overwrite a newer answer until the next change). What the
			// resync is for, kernel state changed behind felt's back with
			// no event, needs no store request.
			m.sweep()
			m.markAll()
		case <-expiry.C:
			m.cfg.Log.Debug("a lease expired; reconciling")
			m.expire()
		case <-retry.C:
			m.markFailed()
		case <-m.wake:
		}
		ok, pending := m.reconcileDirty(ctx)
		switch {
		case !ok:
			retry.Reset(retryIn)
			retryIn = min(retryIn*2, reconcileRetryMax)
		case !pending: // nothing failed is left
			retry.Stop()
			retryIn = reconcileRetry
		}
		// Removing expired leases from the store is housekeeping (Peers
		// ignores them already): beside the loop, so a store that hangs
		// does not hold up the next repair.
		if m.expiredToRemove() && m.removing.CompareAndSwap(false, true) {
			wg.Go(func() {
				defer m.removing.Store(false)
				m.removeExpired(ctx)
			})
		}
		if d, ok := m.nextExpiry(); ok {
			expiry.Reset(d)
		} else {
			expiry.Stop()
		}
	}
}

// A network whose reconcile failed is tried again (alone) after
// reconcileRetry, doubling up to reconcileRetryMax while failures go on.
const (
	reconcileRetry    = 500 * time.Millisecond
	reconcileRetryMax = 10 * time.Second
)

func (m *Manager) sweep() {
	if err := m.removeStray(); err != nil {
		m.cfg.Log.Warn("removing stray overlay devices", "err", err)
	}
}

// nextExpiry is how long until the earliest known lease that has not
// expired yet does (the top of the expiry heap), and a little more: a dead
// host's lease expires without any event, and its peers' entries must go
// then, not at the next resync.
func (m *Manager) nextExpiry() (time.Duration, bool) {
	m.leasesMu.Lock()
	defer m.leasesMu.Unlock()
	if len(m.expiries) == 0 {
		return 0, false
	}
	first := m.expiries[0].at
	now := m.cfg.Leases.Now()
	// Expired means strictly after Expiry; the margin also absorbs timer
	// slack. Capped: a lease centuries ahead (a broken clock, a hostile
	// record) makes Sub saturate, and the margin would then overflow into
	// a negative wait that fires at once, every time.
	return min(first.Sub(now), maxExpiryWait) + 100*time.Millisecond, true
}

// maxExpiryWait bounds the expiry timer; it is armed again after each
// pass anyway.
const maxExpiryWait = time.Hour

// ReconcileAll reconciles every attached network now, beside the loop:
// a full pass. Until the watch has answered for a network's pool, it only
// repairs the network's device: removing entries on the strength of an
// absent answer would cut traffic that is flowing. It reports whether every
// network reconciled.
func (m *Manager) ReconcileAll(ctx context.Context) bool {
	m.mu.Lock()
	work := m.allWork()
	m.mu.Unlock()
	return m.runPass(ctx, work)
}

// reconcileDirty runs one pass over the work marked dirty (dirty.go). It
// reports whether every network of the pass reconciled, and whether
// networks that failed before are still waiting for their retry.
func (m *Manager) reconcileDirty(ctx context.Context) (ok, failedLeft bool) {
	m.mu.Lock()
	work := m.takeWork()
	m.mu.Unlock()
	ok = m.runPass(ctx, work)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range m.networks {
		if a.failed {
			return ok, true
		}
	}
	return ok, false
}

// runPass reconciles the networks of work, with the leases as now known,
// records each one's outcome and tells the Observer about the networks
// that needed a reconcile. It reports whether none failed.
func (m *Manager) runPass(ctx context.Context, work []workItem) bool {
	if len(work) == 0 {
		return true
	}
	start := time.Now()
	// A pool becomes known with its leases (apply holds mu and leasesMu),
	// and is forgotten with them (followPools): a network of a pool known
	// here reads its pool's leases, as they are when it is reconciled.
	m.mu.Lock()
	known := make(map[netip.Prefix]bool, len(m.known))
	for p := range m.known {
		known[p] = true
	}
	m.mu.Unlock()
	ok, ran, failed := true, 0, 0
	outcomes := make([]outcome, len(work))
	for i, w := range work {
		o := m.reconcile(ctx, w, known)
		outcomes[i] = o
		if o.ran {
			ran++
		}
		if !o.ok {
			ok = false
			failed++
		}
	}
	m.mu.Lock()
	for i, w := range work {
		o := outcomes[i]
		if !o.ran || m.networks[w.id] != w.a || w.a.gen != w.gen {
			continue // skipped, detached, or attached again since: its new Attach marked it
		}
		w.a.inLine, w.a.failed = o.ok && o.inLine, !o.ok
	}
	m.mu.Unlock()
	if m.cfg.Observer != nil && ran > 0 {
		m.cfg.Observer.Reconciled(time.Since(start), ran, failed)
	}
	return ok
}

// InSync reports whether every attached network's last reconcile brought
// it to its wanted state from the watch's answer for its pool, with no
// Attach since (true with none attached). A pass that reconciles only some
// networks leaves the others' standing; one network failing makes it
// false until that network reconciles. For readiness checks.
func (m *Manager) InSync() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range m.networks {
		if !a.inLine {
			return false
		}
	}
	return true
}

// PeersVersion changes whenever Snapshot's networks or the peers among its
// leases may have changed: an Attach or Detach, a lease added, removed or
// changed in more than its expiry, an expiry. A renewal does not move it.
// A caller that derives something from Snapshot and Peers (the prober's
// targets) rebuilds it only when the version moved.
func (m *Manager) PeersVersion() uint64 { return m.version.Load() }

// Snapshot returns the attached networks and the latest leases the Manager
// works from, those of the attached networks' pools (known false until the
// watch has answered for every followed pool once): what it serves, for
// metrics and status, without asking the store.
func (m *Manager) Snapshot() (nets []Network, leases []lease.Lease, known bool) {
	m.mu.Lock()
	for _, a := range m.networks {
		nets = append(nets, a.view)
	}
	m.mu.Unlock()
	m.leasesMu.Lock()
	defer m.leasesMu.Unlock()
	return nets, m.allLocked(), m.complete
}

// removeExpired deletes the known leases past their expiry from the store
// (hosts that died without releasing), so that their subnets can be leased
// again: those the expiry heap gave up (expire) or that came expired, not
// every lease. Known leases are those of the attached pools; an expired
// lease of another pool is removed by a host attached to it, or by the
// Acquire that meets it (lease.Registry.Acquire removes an expired lease it
// probes, or every one of the pool when it falls back to listing it). One
// the store keeps (a failure) is tried again after the next pass; one
// renewed or removed leaves the list with the watch's news of it.
func (m *Manager) removeExpired(ctx context.Context) {
	m.leasesMu.Lock()
	if !m.complete || len(m.expired) == 0 {
		m.leasesMu.Unlock()
		return
	}
	expired := make([]lease.Lease, 0, len(m.expired))
	for _, l := range m.expired {
		expired = append(expired, l)
	}
	m.leasesMu.Unlock()
	if n := m.cfg.Leases.RemoveExpired(ctx, expired); n > 0 {
		m.cfg.Log.Info("removed expired leases", "count", n)
	}
}

// expiredToRemove: removeExpired has something to do.
func (m *Manager) expiredToRemove() bool {
	m.leasesMu.Lock()
	defer m.leasesMu.Unlock()
	return m.complete && len(m.expired) > 0
}

// outcome is what one network's reconcile came to.
type outcome struct {
	ran    bool // it was reconciled (not skipped: gone, or peers unchanged)
	ok     bool // it reached its wanted state, or nothing can be done
	inLine bool // ...with its peers from an answer for its pool
}

// reconcile syncs one network, unless it was detached meanwhile, or the
// work only asks for it if its peers changed and they did not. A lease
// change of a network synced before goes to the backend as a delta when it
// takes one (delta.go); everything else is a full Sync.
func (m *Manager) reconcile(ctx context.Context, w workItem, known map[netip.Prefix]bool) outcome {
	a := w.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gone {
		return outcome{ok: true}
	}
	n := a.n
	have := known[n.Pool]
	// A delta is enough for a lease change of a network synced before:
	// it looks at the subnets that changed since (pendingDeltaLocked).
	delta := have && w.how == reconcileIfPeersChanged && a.hasSynced
	var changed []lease.Lease
	var removed []netip.Prefix
	if delta {
		m.leasesMu.Lock()
		changed, removed = m.pendingDeltaLocked(a, n, m.cfg.Leases.Now())
		m.leasesMu.Unlock()
	}
	if w.how == reconcileIfPeersChanged && (!have || delta && len(changed)+len(removed) == 0) {
		return outcome{ok: true}
	}
	b, err := m.backend(n.Backend)
	if err != nil {
		a.hasSynced = false // the changes taken were not synced
		m.cfg.Log.Error("reconcile", "network", n.ID, "err", err)
		return outcome{ran: true, ok: true, inLine: true} // retrying cannot help: the backend is unknown
	}
	if err := b.Setup(ctx, n); err != nil {
		a.hasSynced = false // the changes taken were not synced: the retry syncs all
		m.cfg.Log.Error("overlay device repair failed", "network", n.ID, "err", err)
		return outcome{ran: true}
	}
	if !have {
		return outcome{ran: true, ok: true}
	}
	if ds, ok := b.(DeltaSyncer); ok && delta {
		added, gone := countChanges(a.synced, changed, removed)
		full, err := m.syncDelta(ctx, a, ds, changed, removed)
		if err != nil {
			// What SyncPeers left is unknown: the retry is a full Sync.
			a.hasSynced = false
			m.cfg.Log.Error("overlay sync failed", "network", n.ID, "err", err)
			return outcome{ran: true}
		}
		if !full {
			m.observePeers(added, gone)
			return outcome{ran: true, ok: true, inLine: true}
		}
	}
	m.leasesMu.Lock()
	peers := m.peersLocked(a, n, m.cfg.Leases.Now())
	m.leasesMu.Unlock()
	next := peersOf(peers)
	added, gone := countSets(a.synced, next)
	a.setSynced(func() { a.synced = next })
	if err := b.Sync(ctx, n, peers); err != nil {
		a.hasSynced = false
		m.cfg.Log.Error("overlay sync failed", "network", n.ID, "err", err)
		return outcome{ran: true}
	}
	a.hasSynced = true
	m.observePeers(added, gone)
	return outcome{ran: true, ok: true, inLine: true}
}

// countSets counts, for the Observer, the peers of next added and removed
// compared with synced, as countChanges does for a delta.
func countSets(synced, next peerSet) (added, gone int) {
	for subnet, p := range next {
		old, ok := synced[subnet]
		switch {
		case !ok:
			added++
		case old.publicIP != p.publicIP:
			added++
			gone++
		}
	}
	for subnet := range synced {
		if _, ok := next[subnet]; !ok {
			gone++
		}
	}
	return added, gone
}

// countChanges counts, for the Observer, the peers a change adds and
// removes compared with synced (subnets, and a subnet's public IP: a peer
// that moved counts as one removed and one added).
func countChanges(synced peerSet, changed []lease.Lease, removed []netip.Prefix) (added, gone int) {
	gone = len(removed)
	for _, l := range changed {
		old, ok := synced[l.Subnet]
		switch {
		case !ok:
			added++
		case old.publicIP != l.PublicIP:
			added++
			gone++
		}
	}
	return added, gone
}

// observePeers tells the Observer what a successful sync changed.
func (m *Manager) observePeers(added, removed int) {
	if m.cfg.Observer != nil && added+removed > 0 {
		m.cfg.Observer.PeersChanged(added, removed)
	}
}

// Peers are the live leases of n's pool held by other hosts, those
// CheckPeer refuses left out (peerfilter.go); live by the clock of the
// lease source, as the leases expire by it.
func (m *Manager) Peers(n Network, all []lease.Lease) []lease.Lease {
	now := m.cfg.Leases.Now()
	// Sized for all: growing it by appends cost most of a lease change's
	// CPU with 10,000 peers (BenchmarkScaleLeaseChange).
	peers := make([]lease.Lease, 0, len(all))
	for _, l := range all {
		if m.isPeer(n, l, now) {
			peers = append(peers, l)
		}
	}
	return peers
}

// isPeer reports whether l is a peer of n (Peers) at now: a live lease
// of n's pool held by another host that CheckPeer accepts (peerfilter.go).
func (m *Manager) isPeer(n Network, l lease.Lease, now time.Time) bool {
	return l.Pool == n.Pool && l.HostID != m.cfg.HostID && !l.Expired(now) && m.accepts(n, l, now)
}

// Check reports, at network creation, a layout n's backend cannot serve
// (Backend.Check), so `docker network create` fails with the reason.
func (m *Manager) Check(ctx context.Context, n Network) error {
	b, err := m.backend(n.Backend)
	if err != nil {
		return err
	}
	return b.Check(ctx, n, func(ctx context.Context) ([]lease.Lease, error) {
		ls, err := m.cfg.Leases.Leases(ctx, n.Pool)
		if err != nil {
			return nil, err
		}
		return m.Peers(n, ls), nil
	})
}
