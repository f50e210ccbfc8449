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
	// Leases are the shared leases (a *lease.Registry), watched; Run and
	// Check need them.
	Leases  LeaseSource
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
	// Reconciled: one reconcile of every attached network, which took took;
	// failed of the networks did not reach their wanted state (retried).
	Reconciled(took time.Duration, networks, failed int)
	// PeersChanged: a network's sync added and removed peers (subnets, or
	// a subnet's public IP) compared with its previous successful sync.
	PeersChanged(added, removed int)
}

// Manager keeps every attached network's overlay in line with the leases.
// One lease watch (a blocking query) serves all networks; each
// change, each kernel change that can cost felt entries (kernelevents.go), the
// expiry of a known lease, and a periodic tick reconcile every network.
type Manager struct {
	cfg      ManagerConfig
	nl       *netlink.Handle
	instance string
	mu       sync.Mutex
	networks map[string]*attached // by Docker network ID
	kick     chan struct{}
	closed   chan struct{} // closed by Close
	once     sync.Once
	runMu    sync.Mutex
	running  []chan struct{} // one per Run under way, closed when it returns

	refreshing atomic.Bool // a periodic listing is under way
	removing   atomic.Bool // expired leases are being removed from the store

	leasesMu sync.Mutex
	leases   []lease.Lease // latest snapshot of all leases
	haveAll  bool          // leases holds a full listing

	// inSync: the last ReconcileAll brought every network to its wanted
	// state from a full listing, and no Attach came after it (attachGen
	// counts them, so a reconcile that began before an Attach does not
	// claim the new network synced).
	syncMu    sync.Mutex
	inSync    bool
	attachGen uint64
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
	// device is the backend's DeviceName(n), kept under the Manager's
	// mutex (n is under mu) for deviceUser.
	device string
	// view is n as last attached, under the Manager's mutex (Snapshot):
	// mu may be held through a long reconcile.
	view Network
	// synced are the peers of the last successful Sync (subnet → public
	// IP), to tell the Observer what changed.
	synced map[netip.Prefix]netip.Addr
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
		kick: make(chan struct{}, 1), closed: make(chan struct{}), inSync: true}
}

func (m *Manager) backend(name string) (Backend, error) {
	return m.cfg.Backends.Get(name)
}

// Attach sets up n's device and schedules a reconcile. It does not wait for
// the store: peers are programmed as soon as leases can be read. n stays
// attached when its setup fails, so the reconciler retries it (a start-up
// before the underlay is ready, say); the driver detaches a network whose
// creation failed.
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
	m.mu.Unlock()
	m.syncMu.Lock()
	m.attachGen++
	m.inSync = false
	m.syncMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gone {
		return fmt.Errorf("network %s was detached while being attached", n.ID)
	}
	a.n = n
	err = b.Setup(ctx, n)
	m.Kick()
	return err
}

// Detach forgets n and removes its overlay state. It waits for a reconcile
// of n under way to finish, and none starts after it.
func (m *Manager) Detach(ctx context.Context, n Network) error {
	m.mu.Lock()
	a := m.networks[n.ID]
	delete(m.networks, n.ID)
	m.mu.Unlock()
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

// Kick asks for a reconcile soon; calls coalesce.
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
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

// Run reconciles on every lease change, kernel change, lease expiry and
// every Resync until ctx ends or Close. Networks present at start must be
// attached before: devices of networks that are not are removed. Run
// returns once everything it started has stopped (kernel subscriptions
// closed, no store request under way), so its caller may close the store.
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
	wg.Go(func() { m.watch(ctx) })
	wg.Go(func() { m.watchKernel(ctx) })
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
			m.sweep()
			// The listing runs beside the reconcile, not before it: a store
			// request hanging on a dead connection (this host's address just
			// changed) must not hold up repairing devices from what is known.
			if m.refreshing.CompareAndSwap(false, true) {
				wg.Go(func() {
					defer m.refreshing.Store(false)
					m.refresh(ctx)
					m.Kick()
				})
			}
		case <-expiry.C:
			m.cfg.Log.Debug("a lease expired; reconciling")
		case <-retry.C:
		case <-m.kick:
		}
		if m.ReconcileAll(ctx) {
			retry.Stop()
			retryIn = reconcileRetry
		} else {
			retry.Reset(retryIn)
			retryIn = min(retryIn*2, reconcileRetryMax)
		}
		// Removing expired leases from the store is housekeeping (Peers
		// ignores them already): beside the loop, like the listing, so a
		// store that hangs does not hold up the next repair.
		if m.removing.CompareAndSwap(false, true) {
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

// A reconcile that failed is tried again after reconcileRetry, doubling up
// to reconcileRetryMax while it keeps failing.
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
// expired yet does, and a little more: a dead host's lease expires without
// any event, and its peers' entries must go then, not at the next resync.
func (m *Manager) nextExpiry() (time.Duration, bool) {
	m.leasesMu.Lock()
	defer m.leasesMu.Unlock()
	now := m.cfg.Leases.Now()
	var first time.Time
	for _, l := range m.leases {
		if l.Expiry.IsZero() || l.Expired(now) {
			continue
		}
		if first.IsZero() || l.Expiry.Before(first) {
			first = l.Expiry
		}
	}
	if first.IsZero() {
		return 0, false
	}
	// Expired means strictly after Expiry; the margin also absorbs timer
	// slack. Capped: a lease centuries ahead (a broken clock, a hostile
	// record) makes Sub saturate, and the margin would then overflow into
	// a negative wait that fires at once, every time.
	return min(first.Sub(now), maxExpiryWait) + 100*time.Millisecond, true
}

// maxExpiryWait bounds the expiry timer; it is armed again after each
// reconcile anyway.
const maxExpiryWait = time.Hour

// The lease watch retries a failed query every watchRetry at first, then
// at most every watchRetryMax: cheap (one request), and a store that comes
// back is noticed within seconds. (It backed off to 30 s once, and peers
// that appeared meanwhile took that long to be routed.)
const (
	watchRetry    = 500 * time.Millisecond
	watchRetryMax = 2 * time.Second
)

// watch follows the leases with blocking queries, keeping the latest
// snapshot; after an error it retries and starts again from a full listing.
func (m *Manager) watch(ctx context.Context) {
	var index uint64
	backoff := watchRetry
	failing := false
	for ctx.Err() == nil {
		ls, next, err := m.cfg.Leases.WatchLeases(ctx, index)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				m.cfg.Log.Warn("lease watch failed; retrying", "err", err, "every", watchRetryMax)
			} else {
				m.cfg.Log.Debug("lease watch failed again", "err", err)
			}
			failing = true
			index = 0 // resync from scratch when it works again
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, watchRetryMax)
			continue
		}
		if failing {
			m.cfg.Log.Info("lease watch recovered")
			failing = false
		}
		backoff = watchRetry
		// Index 0 after a non-zero one: the store's index went backwards
		// (e.g. Consul restored), and the next query is a full resync.
		changed := index == 0 || next != index
		index = next
		if changed {
			m.setLeases(ls)
			m.Kick()
		}
	}
}

// refresh re-reads all leases (the periodic full resync).
func (m *Manager) refresh(ctx context.Context) {
	ls, err := m.cfg.Leases.AllLeases(ctx)
	if err != nil {
		m.cfg.Log.Warn("lease listing failed; keeping current entries", "err", err)
		return
	}
	m.setLeases(ls)
}

func (m *Manager) setLeases(ls []lease.Lease) {
	m.leasesMu.Lock()
	m.leases, m.haveAll = ls, true
	m.leasesMu.Unlock()
}

// ReconcileAll syncs every attached network with the latest leases. Until
// the store has answered once, it only repairs devices: removing entries on
// the strength of an empty answer would cut traffic that is flowing.
//
// It reports whether every network reconciled: Run retries soon when one
// did not (a route to a peer refused while the kernel was still bringing
// the underlay back, say), not at the next event or resync, which may not
// come for a long time.
func (m *Manager) ReconcileAll(ctx context.Context) bool {
	start := time.Now()
	m.syncMu.Lock()
	gen := m.attachGen
	m.syncMu.Unlock()
	m.mu.Lock()
	nets := make([]*attached, 0, len(m.networks))
	for _, a := range m.networks {
		nets = append(nets, a)
	}
	m.mu.Unlock()
	m.leasesMu.Lock()
	all, have := m.leases, m.haveAll
	m.leasesMu.Unlock()
	ok, failed := true, 0
	for _, a := range nets {
		if !m.reconcile(ctx, a, all, have) {
			ok = false
			failed++
		}
	}
	m.syncMu.Lock()
	if gen == m.attachGen {
		m.inSync = ok && (have || len(nets) == 0)
	}
	m.syncMu.Unlock()
	if m.cfg.Observer != nil {
		m.cfg.Observer.Reconciled(time.Since(start), len(nets), failed)
	}
	return ok
}

// InSync reports whether the last reconcile brought every attached network
// to its wanted state from a full listing of the leases, with no network
// attached since (true with none attached). For readiness checks.
func (m *Manager) InSync() bool {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	return m.inSync
}

// Snapshot returns the attached networks and the latest leases the Manager
// works from (known false until the store has answered once): what it
// serves, for metrics and status, without asking the store.
func (m *Manager) Snapshot() (nets []Network, leases []lease.Lease, known bool) {
	m.mu.Lock()
	for _, a := range m.networks {
		nets = append(nets, a.view)
	}
	m.mu.Unlock()
	m.leasesMu.Lock()
	defer m.leasesMu.Unlock()
	return nets, m.leases, m.haveAll
}

// removeExpired deletes the known leases past their expiry from the store
// (hosts that died without releasing), so that their subnets can be leased
// again.
func (m *Manager) removeExpired(ctx context.Context) {
	m.leasesMu.Lock()
	all, have := m.leases, m.haveAll
	m.leasesMu.Unlock()
	if !have {
		return
	}
	if n := m.cfg.Leases.RemoveExpired(ctx, all); n > 0 {
		m.cfg.Log.Info("removed expired leases", "count", n)
	}
}

// reconcile syncs one network, unless it was detached meanwhile.
// It reports whether the network's state is now as wanted.
func (m *Manager) reconcile(ctx context.Context, a *attached, all []lease.Lease, have bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gone {
		return true
	}
	n := a.n
	b, err := m.backend(n.Backend)
	if err != nil {
		m.cfg.Log.Error("reconcile", "network", n.ID, "err", err)
		return true // retrying cannot help: the backend is unknown
	}
	if err := b.Setup(ctx, n); err != nil {
		m.cfg.Log.Error("overlay device repair failed", "network", n.ID, "err", err)
		return false
	}
	if !have {
		return true
	}
	peers := m.Peers(n, all)
	if err := b.Sync(ctx, n, peers); err != nil {
		m.cfg.Log.Error("overlay sync failed", "network", n.ID, "err", err)
		return false
	}
	m.observePeers(a, peers)
	return true
}

// observePeers tells the Observer how peers differ from a's last
// successful sync, and remembers them. Called with a.mu held.
func (m *Manager) observePeers(a *attached, peers []lease.Lease) {
	now := make(map[netip.Prefix]netip.Addr, len(peers))
	added, removed := 0, 0
	for _, p := range peers {
		now[p.Subnet] = p.PublicIP
		if ip, ok := a.synced[p.Subnet]; !ok || ip != p.PublicIP {
			added++
		}
	}
	for subnet, ip := range a.synced {
		if cur, ok := now[subnet]; !ok || cur != ip {
			removed++
		}
	}
	a.synced = now
	if m.cfg.Observer != nil && added+removed > 0 {
		m.cfg.Observer.PeersChanged(added, removed)
	}
}

// Peers are the live leases of n's pool held by other hosts; live by the
// clock of the lease source, as the leases expire by it.
func (m *Manager) Peers(n Network, all []lease.Lease) []lease.Lease {
	now := m.cfg.Leases.Now()
	var peers []lease.Lease
	for _, l := range all {
		if l.Pool != n.Pool || l.HostID == m.cfg.HostID || l.Subnet == n.Subnet || l.Expired(now) {
			continue
		}
		peers = append(peers, l)
	}
	return peers
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
