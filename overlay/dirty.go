package overlay

import (
	"net/netip"

	"github.com/felt-net/felt/lease"
)

// Which networks a pass reconciles. Reconciling all of them on every
// trigger cost a host with many networks one reconcile per network for
// each CreateNetwork, each lease change anywhere and each kernel event
// (issue #14: 500 reconciles per create at 500 networks). Each trigger
// marks what it concerns instead, and the loop's next pass takes the marks:
//
//   - Attach: its network, which Attach set up itself: synced as soon as
//     its pool's leases are known (a failed setup: always).
//   - A lease answer: the networks of the pools it changed, if their peers
//     (host, subnet, public IP, backend data of the live leases of others;
//     not Expiry, which every renewal moves) differ from those of their
//     last successful sync; only the difference is synced when the
//     backend takes a delta (delta.go).
//   - The expiry timer: the networks of the pools a lease expired in, on
//     the same condition (expire, leasewatch.go).
//   - A kernel event: the network whose device, address or route it
//     concerns, always (kernelevents.go).
//   - A failure: the failed networks, always, on the retry timer.
//   - The resync tick, the first complete lease answer, Kick and kernel
//     events that concern every network (the underlay's): every network,
//     always.

// reconcileHow says when a marked network is reconciled.
type reconcileHow int

const (
	// reconcileIfPeersChanged: when its peers differ from those of its
	// last successful Sync, or it never synced; else it is skipped.
	reconcileIfPeersChanged reconcileHow = iota + 1
	// reconcileAlways: Setup and Sync whatever the peers.
	reconcileAlways
)

// dirtySet is the work marked for the next pass, under the Manager's mutex.
type dirtySet struct {
	all  bool // every network, always
	nets map[string]reconcileHow
}

// mark asks for network id's reconcile; always wins over a peer check.
func (d *dirtySet) mark(id string, how reconcileHow) {
	if d.nets == nil {
		d.nets = map[string]reconcileHow{}
	}
	d.nets[id] = max(d.nets[id], how)
}

func (d *dirtySet) markAll() { d.all = true }

// forget drops a detached network's marks.
func (d *dirtySet) forget(id string) { delete(d.nets, id) }

// workItem is one network of a pass: the attached record, its ID, its
// Attach generation when the pass took it, and how to reconcile it.
type workItem struct {
	a   *attached
	id  string
	gen uint64
	how reconcileHow
}

// takeWork returns the marked work and clears the marks. Called with m.mu
// held.
func (m *Manager) takeWork() []workItem {
	d := m.dirty
	m.dirty = dirtySet{}
	if d.all {
		return m.allWork()
	}
	var work []workItem
	for id, a := range m.networks {
		if how := d.nets[id]; how != 0 {
			work = append(work, workItem{a: a, id: id, gen: a.gen, how: how})
		}
	}
	return work
}

// allWork is every attached network, always. Called with m.mu held.
func (m *Manager) allWork() []workItem {
	work := make([]workItem, 0, len(m.networks))
	for id, a := range m.networks {
		work = append(work, workItem{a: a, id: id, gen: a.gen, how: reconcileAlways})
	}
	return work
}

// markAll asks the next pass to reconcile every network.
func (m *Manager) markAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dirty.markAll()
}

// markFailed asks the next pass to retry the networks whose last reconcile
// failed, and only them.
func (m *Manager) markFailed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, a := range m.networks {
		if a.failed {
			m.dirty.mark(id, reconcileAlways)
		}
	}
}

// markPools asks the next pass to check the peers of the networks in
// pools (a lease answer changed those pools). Called with m.mu held.
func (m *Manager) markPools(pools map[netip.Prefix]bool) {
	for id, a := range m.networks {
		if pools[a.view.Pool] {
			m.dirty.mark(id, reconcileIfPeersChanged)
		}
	}
}

// markNetworks asks the next pass to reconcile the attached networks of
// ids (a kernel event concerned their devices); IDs of networks not
// attached (a device being torn down, a stray) are ignored.
func (m *Manager) markNetworks(ids map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range ids {
		if _, ok := m.networks[id]; ok {
			m.dirty.mark(id, reconcileAlways)
		}
	}
}

// peer is what a backend programs from a peer's lease: a change of any of
// it needs a Sync. Expiry is left out: every renewal moves it, and whether
// the lease is live is decided before (Peers).
type peer struct {
	hostID   string
	publicIP netip.Addr
	data     string
}

// peerSet is a network's peers by subnet.
type peerSet map[netip.Prefix]peer

func peersOf(ls []lease.Lease) peerSet {
	s := make(peerSet, len(ls))
	for _, l := range ls {
		s[l.Subnet] = peer{hostID: l.HostID, publicIP: l.PublicIP, data: string(l.BackendData)}
	}
	return s
}
