package overlay

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
)

// ManagerConfig holds the Manager's dependencies.
type ManagerConfig struct {
	Registry *lease.Registry
	Store    kv.Store // the shared store the registry writes to; watched
	Netlink  *netlink.Handle
	HostID   string
	Underlay Host
	// Backends by name; nil means the standard ones (NewBackends).
	Backends map[string]Backend
	// Resync is the period of the full reconcile that runs besides events.
	Resync time.Duration
	Log    *slog.Logger
}

// Manager keeps every attached network's overlay in line with the leases.
// One blocking query on the whole lease prefix serves all networks; each
// change, and a periodic tick, reconciles every network.
type Manager struct {
	cfg      ManagerConfig
	mu       sync.Mutex
	networks map[string]Network // by Docker network ID
	kick     chan struct{}
	closed   chan struct{}
	once     sync.Once

	refreshing atomic.Bool // a periodic listing is under way

	leasesMu sync.Mutex
	leases   []lease.Lease // latest snapshot of all leases
	haveAll  bool          // leases holds a full listing
}

// NewManager returns a Manager; call Run to start reconciling.
func NewManager(cfg ManagerConfig) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Backends == nil {
		cfg.Backends = NewBackends(cfg.Netlink, cfg.Underlay, cfg.HostID, cfg.Log)
	}
	return &Manager{cfg: cfg, networks: map[string]Network{}, kick: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (m *Manager) backend(name string) (Backend, error) {
	b, ok := m.cfg.Backends[name]
	if !ok {
		return nil, fmt.Errorf("backend %q is not available", name)
	}
	return b, nil
}

// Attach sets up n's device and schedules a reconcile. It does not wait for
// the store: peers are programmed as soon as leases can be read.
func (m *Manager) Attach(ctx context.Context, n Network) error {
	b, err := m.backend(n.Backend)
	if err != nil {
		return err
	}
	if err := b.Setup(ctx, n); err != nil {
		return err
	}
	m.mu.Lock()
	m.networks[n.ID] = n
	m.mu.Unlock()
	m.Kick()
	return nil
}

// Detach forgets n and removes its overlay state.
func (m *Manager) Detach(ctx context.Context, n Network) error {
	m.mu.Lock()
	delete(m.networks, n.ID)
	m.mu.Unlock()
	b, err := m.backend(n.Backend)
	if err != nil {
		return err
	}
	return b.Teardown(ctx, n)
}

// Kick asks for a reconcile soon; calls coalesce.
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Close stops Run.
func (m *Manager) Close() { m.once.Do(func() { close(m.closed) }) }

// Run reconciles on every lease change and every Resync until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-m.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	go m.watch(ctx)
	tick := time.NewTicker(m.cfg.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// The listing runs beside the reconcile, not before it: a store
			// request hanging on a dead connection (this host's address just
			// changed) must not hold up repairing devices from what is known.
			if m.refreshing.CompareAndSwap(false, true) {
				go func() {
					defer m.refreshing.Store(false)
					m.refresh(ctx)
					m.Kick()
				}()
			}
		case <-m.kick:
		}
		m.ReconcileAll(ctx)
	}
}

// watch follows the lease prefix with blocking queries, keeping the latest
// snapshot; after an error it backs off and starts again from a full listing.
func (m *Manager) watch(ctx context.Context) {
	prefix := m.cfg.Registry.LeasesPrefix()
	var index uint64
	backoff := time.Second
	for ctx.Err() == nil {
		pairs, next, err := m.cfg.Store.Wait(ctx, prefix, index)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.cfg.Log.Warn("lease watch failed; retrying", "err", err, "in", backoff)
			index = 0 // resync from scratch when it works again
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = time.Second
		if next < index {
			next = 0 // the store's index went backwards (e.g. Consul restored): full resync
		}
		changed := index == 0 || next != index
		index = next
		if changed {
			m.setLeases(lease.DecodeLeases(pairs))
			m.Kick()
		}
	}
}

// refresh re-reads all leases (the periodic full resync).
func (m *Manager) refresh(ctx context.Context) {
	pairs, _, err := m.cfg.Store.List(ctx, m.cfg.Registry.LeasesPrefix())
	if err != nil {
		m.cfg.Log.Warn("lease listing failed; keeping current entries", "err", err)
		return
	}
	m.setLeases(lease.DecodeLeases(pairs))
}

func (m *Manager) setLeases(ls []lease.Lease) {
	m.leasesMu.Lock()
	m.leases, m.haveAll = ls, true
	m.leasesMu.Unlock()
}

// ReconcileAll syncs every attached network with the latest leases. Until
// the store has answered once, it only repairs devices: removing entries on
// the strength of an empty answer would cut traffic that is flowing.
func (m *Manager) ReconcileAll(ctx context.Context) {
	m.mu.Lock()
	nets := make([]Network, 0, len(m.networks))
	for _, n := range m.networks {
		nets = append(nets, n)
	}
	m.mu.Unlock()
	m.leasesMu.Lock()
	all, have := m.leases, m.haveAll
	m.leasesMu.Unlock()
	if have {
		if n := m.cfg.Registry.RemoveExpired(ctx, all); n > 0 {
			m.cfg.Log.Info("removed expired leases", "count", n)
		}
	}
	for _, n := range nets {
		b, err := m.backend(n.Backend)
		if err != nil {
			m.cfg.Log.Error("reconcile", "network", n.ID, "err", err)
			continue
		}
		if err := b.Setup(ctx, n); err != nil {
			m.cfg.Log.Error("overlay device repair failed", "network", n.ID, "err", err)
			continue
		}
		if !have {
			continue
		}
		if err := b.Sync(ctx, n, m.Peers(n, all)); err != nil {
			m.cfg.Log.Error("overlay sync failed", "network", n.ID, "err", err)
		}
	}
}

// Peers are the live leases of n's pool held by other hosts.
func (m *Manager) Peers(n Network, all []lease.Lease) []lease.Lease {
	now := time.Now()
	var peers []lease.Lease
	for _, l := range all {
		if l.Pool != n.Pool || l.HostID == m.cfg.HostID || l.Subnet == n.Subnet || l.Expired(now) {
			continue
		}
		peers = append(peers, l)
	}
	return peers
}

// Check reports, at network creation, a layout the backend cannot serve:
// for host-gw, peers already holding leases that are not on this host's L2
// segment. Done then so `docker network create` fails with the reason,
// rather than the network silently black-holing traffic to those peers.
func (m *Manager) Check(ctx context.Context, n Network) error {
	if n.Backend != "host-gw" {
		return nil
	}
	ls, err := m.cfg.Registry.Leases(ctx, n.Pool)
	if err != nil {
		return err
	}
	return CheckHostGW(m.cfg.Underlay, m.cfg.Netlink, m.Peers(n, ls))
}
