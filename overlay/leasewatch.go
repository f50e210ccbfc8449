package overlay

import (
	"context"
	"net/netip"
	"slices"

	"github.com/felt-net/felt/lease"
)

// The Manager follows the leases of its attached networks' pools only,
// through a LeaseWatch (ManagerConfig.Watch, a *lease.Watch): Attach and
// Detach set the watch's pools, Run reads its answers in watch. An answer
// replaces the Manager's snapshot and marks the networks of the pools it
// changed for a peer check (dirty.go); the watch retries the store itself.

// leaseSnapshot is the watch's latest answer, indexed by pool.
type leaseSnapshot struct {
	all    []lease.Lease
	byPool map[netip.Prefix][]lease.Lease
	// complete: an answer came in which every followed pool had answered
	// (Update.Complete) at least once since Run started. It stays true
	// after: a pool followed since has its own knowledge (Manager.known),
	// and the Snapshot's "leases read" should not flicker with each
	// Attach of a new pool.
	complete bool
}

func (m *Manager) snapshot() leaseSnapshot {
	m.leasesMu.Lock()
	defer m.leasesMu.Unlock()
	return m.snap
}

// followPools tells the watch the pools of the attached networks, when
// they changed, and forgets what it knew of pools no longer followed: a
// pool followed again is known only after its next first answer.
func (m *Manager) followPools() {
	m.poolsMu.Lock()
	defer m.poolsMu.Unlock()
	m.mu.Lock()
	var pools []netip.Prefix
	for _, a := range m.networks {
		pools = append(pools, a.view.Pool)
	}
	slices.SortFunc(pools, netip.Prefix.Compare)
	pools = slices.Compact(pools)
	for p := range m.known {
		if _, ok := slices.BinarySearchFunc(pools, p, netip.Prefix.Compare); !ok {
			delete(m.known, p)
		}
	}
	m.mu.Unlock()
	if slices.Equal(pools, m.pools) {
		return
	}
	var gen uint64
	if m.cfg.Watch != nil {
		gen = m.cfg.Watch.SetPools(slices.Clone(pools))
	}
	for _, p := range pools {
		if !slices.Contains(m.pools, p) {
			m.followed[p] = gen
		}
	}
	for p := range m.followed {
		if !slices.Contains(pools, p) {
			delete(m.followed, p)
		}
	}
	m.pools = pools
}

// watch reads the watch's answers until ctx ends, and wakes the loop after
// each (also when nothing is dirty: the expiry timer is armed again from
// the new leases).
func (m *Manager) watch(ctx context.Context) {
	for {
		u, err := m.cfg.Watch.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.cfg.Log.Error("lease watch ended: peers are no longer followed", "err", err)
			}
			return
		}
		m.apply(u)
		m.poke()
	}
}

// apply records an answer: its leases become the snapshot (first, see
// runPass), the pools it changed that are attached become known and their
// networks are marked for a peer check; the first complete answer marks
// every network. An answer made before its pool was last followed afresh
// (a Detach and an Attach in it since) says nothing of the pool: the watch
// reads it anew, and its next answers hold none of its leases until then,
// so a pool known from the old answer would have its networks synced with
// no peer. Under poolsMu, so that followed is the watch's.
func (m *Manager) apply(u lease.Update) {
	m.poolsMu.Lock()
	defer m.poolsMu.Unlock()
	byPool := groupByPool(u.Leases)
	m.leasesMu.Lock()
	first := u.Complete && !m.snap.complete
	m.snap = leaseSnapshot{all: u.Leases, byPool: byPool, complete: m.snap.complete || u.Complete}
	m.leasesMu.Unlock()

	m.mu.Lock()
	defer m.mu.Unlock()
	attachedPools := map[netip.Prefix]bool{}
	for _, a := range m.networks {
		attachedPools[a.view.Pool] = true
	}
	changed := map[netip.Prefix]bool{}
	for _, p := range u.Changed {
		// An answer for a pool no longer attached (made before its
		// Detach), or made before it was followed again, must not make
		// it known: it is known from its next first answer only.
		if gen, ok := m.followed[p]; attachedPools[p] && ok && u.Gen >= gen {
			m.known[p] = true
			changed[p] = true
		}
	}
	m.markPools(changed)
	if first {
		m.dirty.markAll()
	}
}

// groupByPool indexes leases by pool. An answer lists each pool's leases
// together, in key order (lease.Update), so each pool's run is a subslice
// of leases: no lease is copied, which cost milliseconds per answer with
// 10,000 leases. Leases out of that order (a pool's run split in two) are
// gathered into a copy.
func groupByPool(leases []lease.Lease) map[netip.Prefix][]lease.Lease {
	byPool := map[netip.Prefix][]lease.Lease{}
	for i := 0; i < len(leases); {
		p := leases[i].Pool
		j := i + 1
		for j < len(leases) && leases[j].Pool == p {
			j++
		}
		if prev, ok := byPool[p]; ok {
			byPool[p] = append(slices.Clip(prev), leases[i:j]...) // copies: leases is not changed
		} else {
			byPool[p] = leases[i:j:j]
		}
		i = j
	}
	return byPool
}
