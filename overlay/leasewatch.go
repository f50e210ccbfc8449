package overlay

import (
	"bytes"
	"container/heap"
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/lease"
)

// The Manager follows the leases of its attached networks' pools only,
// through a LeaseWatch (ManagerConfig.Watch, a *lease.Watch): Attach and
// Detach set the watch's pools, Run reads its answers in watch. An answer
// tells how each changed pool's leases changed, record by record (or the
// pool whole, a Reset); the Manager keeps each pool's leases by subnet
// from them (poolLeases), notes the subnets each network of the pool must
// look at again (attached.pending) and marks those networks for a peer
// check (dirty.go). Nothing of this walks a pool: a change costs the
// leases it changed (issue #14). The watch retries the store itself.
//
// A lease that expires changes no record: the expiry heap (leases not
// expired yet, by expiry) arms Run's expiry timer, and when it fires the
// leases past their expiry are taken off it, their subnets noted for the
// networks of their pools like a change, and kept for removeExpired.

// poolLeases are one followed pool's leases (expired ones included), as the
// watch told them, by subnet; and their entries in the expiry heap.
type poolLeases struct {
	bySubnet map[netip.Prefix]lease.Lease
	expiring map[netip.Prefix]*expiryItem
}

// leaseID names a lease of a followed pool.
type leaseID struct{ pool, subnet netip.Prefix }

// expiryItem is a lease not expired yet, in the expiry heap.
type expiryItem struct {
	id    leaseID
	at    time.Time
	index int // in the heap
}

// expiryHeap orders leases by expiry, earliest first.
type expiryHeap []*expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *expiryHeap) Push(x any) {
	it := x.(*expiryItem)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
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
	m.leasesMu.Lock()
	for p := range m.known {
		if _, ok := slices.BinarySearchFunc(pools, p, netip.Prefix.Compare); !ok {
			delete(m.known, p)
		}
	}
	for p := range m.leases {
		if _, ok := slices.BinarySearchFunc(pools, p, netip.Prefix.Compare); !ok {
			m.dropPoolLocked(p)
		}
	}
	m.leasesMu.Unlock()
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

// apply records an answer: the changes of each pool it tells of that is
// attached go into the pool's leases, the pool becomes known, and its
// networks note the subnets changed and are marked for a peer check; the
// first complete answer marks every network. An answer made before its
// pool was last followed afresh (a Detach and an Attach in it since) says
// nothing of the pool: the watch reads it anew, and tells it whole (a
// Reset) in a later answer; until then the pool is not known, so its
// networks are not synced with no peer. Under poolsMu, so that followed
// is the watch's.
func (m *Manager) apply(u lease.Update) {
	m.poolsMu.Lock()
	defer m.poolsMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leasesMu.Lock()
	defer m.leasesMu.Unlock()
	first := u.Complete && !m.complete
	m.complete = m.complete || u.Complete
	now := m.cfg.Leases.Now()
	changed := map[netip.Prefix]bool{}
	for _, p := range u.Changed {
		// An answer for a pool no longer followed (made before the
		// followPools of its Detach), or made before it was followed
		// again, must not make it known, nor change what is kept of it:
		// it is known from its next first answer only. A pool still
		// followed is taken even if no network of it is attached at this
		// moment (a Detach whose followPools has not run yet): an Attach
		// of the pool before that followPools keeps it followed, with no
		// Reset to come, so what is kept of it must stay whole; the
		// followPools that stops following it drops it.
		gen, ok := m.followed[p]
		if !ok || u.Gen < gen {
			if !ok {
				m.dropPoolLocked(p)
			}
			continue
		}
		c := u.Changes[p]
		subnets := m.changePoolLocked(p, c, now)
		m.known[p] = true
		changed[p] = true
		for _, a := range m.networks {
			if a.view.Pool != p {
				continue
			}
			if c.Reset {
				a.pendingAll = true
				continue
			}
			if a.pending == nil {
				a.pending = map[netip.Prefix]bool{}
			}
			for _, s := range subnets {
				a.pending[s] = true
			}
		}
	}
	m.markPools(changed)
	if first {
		m.dirty.markAll()
	}
}

// changePoolLocked applies c to p's leases and returns the subnets it
// changed (none for a Reset: every one may have). Called with leasesMu.
func (m *Manager) changePoolLocked(p netip.Prefix, c lease.PoolChange, now time.Time) []netip.Prefix {
	m.all = nil
	if c.Reset {
		m.dropPoolLocked(p)
		m.version.Add(1)
	}
	ps := m.leases[p]
	if ps == nil {
		ps = &poolLeases{bySubnet: make(map[netip.Prefix]lease.Lease, len(c.Upserted)), expiring: map[netip.Prefix]*expiryItem{}}
		m.leases[p] = ps
	}
	var subnets []netip.Prefix
	if !c.Reset {
		subnets = make([]netip.Prefix, 0, len(c.Upserted)+len(c.Removed))
	}
	for _, l := range c.Upserted {
		if l.Pool != p { // not the watch's: it reads a pool's own
			continue
		}
		if old, had := ps.bySubnet[l.Subnet]; !had || !sameButLater(old, l, now) {
			m.version.Add(1)
		}
		ps.bySubnet[l.Subnet] = l
		m.expiryLocked(ps, l, now)
		if !c.Reset {
			subnets = append(subnets, l.Subnet)
		}
	}
	for _, s := range c.Removed {
		if _, had := ps.bySubnet[s]; had {
			m.version.Add(1)
		}
		delete(ps.bySubnet, s)
		m.unexpireLocked(ps, leaseID{p, s})
		subnets = append(subnets, s)
	}
	return subnets
}

// sameButLater reports whether l is old renewed: the same holder, address
// and backend data, live before and after, only its expiry moved. Every
// host renews its leases (hourly by default), so with 10,000 peers this is
// most lease changes; it changes no peer, so PeersVersion stays.
func sameButLater(old, l lease.Lease, now time.Time) bool {
	return old.HostID == l.HostID && old.PublicIP == l.PublicIP && bytes.Equal(old.BackendData, l.BackendData) &&
		old.Expiry.IsZero() == l.Expiry.IsZero() && !old.Expired(now) && !l.Expired(now)
}

// expiryLocked files l by its expiry: in the heap if it is to expire, with
// the expired ones to remove from the store if it has, nowhere if it never
// does.
func (m *Manager) expiryLocked(ps *poolLeases, l lease.Lease, now time.Time) {
	id := leaseID{l.Pool, l.Subnet}
	switch it := ps.expiring[id.subnet]; {
	case l.Expiry.IsZero() || l.Expired(now):
		m.unexpireLocked(ps, id)
		if !l.Expiry.IsZero() {
			m.expired[id] = l
		}
	case it != nil:
		delete(m.expired, id)
		it.at = l.Expiry
		heap.Fix(&m.expiries, it.index)
	default:
		delete(m.expired, id)
		it := &expiryItem{id: id, at: l.Expiry}
		heap.Push(&m.expiries, it)
		ps.expiring[id.subnet] = it
	}
}

// unexpireLocked forgets id's expiry: it went, or never expires.
func (m *Manager) unexpireLocked(ps *poolLeases, id leaseID) {
	delete(m.expired, id)
	if it := ps.expiring[id.subnet]; it != nil {
		heap.Remove(&m.expiries, it.index)
		delete(ps.expiring, id.subnet)
	}
}

// dropPoolLocked forgets p's leases (no longer followed, or told whole
// again).
func (m *Manager) dropPoolLocked(p netip.Prefix) {
	ps := m.leases[p]
	if ps == nil {
		return
	}
	for s := range ps.expiring {
		m.unexpireLocked(ps, leaseID{p, s})
	}
	for s := range ps.bySubnet {
		delete(m.expired, leaseID{p, s})
	}
	delete(m.leases, p)
	m.all = nil
	m.version.Add(1)
}

// expire takes the leases past their expiry off the expiry heap (the
// timer Run arms from it fired), keeps them for removeExpired, and has
// the networks of their pools look at their subnets again.
func (m *Manager) expire() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leasesMu.Lock()
	defer m.leasesMu.Unlock()
	now := m.cfg.Leases.Now()
	byPool := map[netip.Prefix][]netip.Prefix{}
	for len(m.expiries) > 0 && now.After(m.expiries[0].at) {
		it := heap.Pop(&m.expiries).(*expiryItem)
		ps := m.leases[it.id.pool]
		delete(ps.expiring, it.id.subnet)
		m.expired[it.id] = ps.bySubnet[it.id.subnet]
		byPool[it.id.pool] = append(byPool[it.id.pool], it.id.subnet)
	}
	if len(byPool) > 0 {
		m.version.Add(1) // an expired lease is no peer any more
	}
	pools := map[netip.Prefix]bool{}
	for _, a := range m.networks {
		subnets := byPool[a.view.Pool]
		if len(subnets) == 0 || !m.known[a.view.Pool] {
			continue
		}
		if a.pending == nil {
			a.pending = map[netip.Prefix]bool{}
		}
		for _, s := range subnets {
			a.pending[s] = true
		}
		pools[a.view.Pool] = true
	}
	m.markPools(pools)
}

// pendingDeltaLocked is how n's peers differ from a's last sync at the
// subnets noted since (or, after a Reset, at every subnet: O(pool), once),
// and forgets the notes. Called with leasesMu, for a network synced before.
func (m *Manager) pendingDeltaLocked(a *attached, n Network, now time.Time) (changed []lease.Lease, removed []netip.Prefix) {
	isPeer := func(l lease.Lease) bool { return m.isPeer(n, l, now) }
	var leases map[netip.Prefix]lease.Lease
	if ps := m.leases[n.Pool]; ps != nil {
		leases = ps.bySubnet
	}
	if a.pendingAll {
		changed, removed = a.synced.deltaAll(leases, isPeer)
	} else {
		changed, removed = a.synced.deltaAt(a.pending, leases, isPeer)
	}
	a.pending, a.pendingAll = nil, false
	slices.SortFunc(changed, func(x, y lease.Lease) int { return x.Subnet.Compare(y.Subnet) })
	slices.SortFunc(removed, netip.Prefix.Compare)
	return changed, removed
}

// peersLocked are n's peers among its pool's leases, by subnet, for a full
// Sync; the notes of what changed since the last are forgotten (the Sync
// takes everything). Called with leasesMu.
func (m *Manager) peersLocked(a *attached, n Network, now time.Time) []lease.Lease {
	a.pending, a.pendingAll = nil, false
	ps := m.leases[n.Pool]
	if ps == nil {
		return nil
	}
	peers := make([]lease.Lease, 0, len(ps.bySubnet))
	for _, l := range ps.bySubnet {
		if m.isPeer(n, l, now) {
			peers = append(peers, l)
		}
	}
	slices.SortFunc(peers, func(x, y lease.Lease) int { return x.Subnet.Compare(y.Subnet) })
	return peers
}

// allLocked is every lease of the followed pools, in store key order, for
// Snapshot: made once after each change, not per change.
func (m *Manager) allLocked() []lease.Lease {
	if m.all != nil || len(m.leases) == 0 {
		return m.all
	}
	pools := make([]netip.Prefix, 0, len(m.leases))
	n := 0
	for p, ps := range m.leases {
		pools = append(pools, p)
		n += len(ps.bySubnet)
	}
	slices.SortFunc(pools, func(a, b netip.Prefix) int { return strings.Compare(ipnet.Key(a), ipnet.Key(b)) })
	all := make([]lease.Lease, 0, n)
	for _, p := range pools {
		start := len(all)
		for _, l := range m.leases[p].bySubnet {
			all = append(all, l)
		}
		keys := make(map[netip.Prefix]string, len(all)-start)
		for _, l := range all[start:] {
			keys[l.Subnet] = ipnet.Key(l.Subnet)
		}
		slices.SortFunc(all[start:], func(a, b lease.Lease) int { return strings.Compare(keys[a.Subnet], keys[b.Subnet]) })
	}
	m.all = all
	return all
}
