package overlay

import (
	"context"
	"errors"
	"net/netip"

	"github.com/felt-net/felt/lease"
)

// Incremental sync (issue #14). A full Sync of a network hands the backend
// every peer, and the backend dumps and compares all of the network's
// kernel entries: with 10,000 peers that cost seconds of CPU per lease
// change. The Manager remembers the peers of each network's last sync
// (attached.synced) and, for a lease change (reconcileIfPeersChanged) of a
// network synced before, hands a DeltaSyncer backend only the peers that
// were added or changed and the subnets that went.
//
// A full Sync still runs whenever the Manager cannot vouch for the kernel:
// the first sync after an Attach (a new or re-Setup device), the periodic
// resync, Kick, the first complete lease answer, kernel events (all
// reconcileAlways), a backend without SyncPeers, a SyncPeers that asks for
// it (ErrFullSyncNeeded: the device was recreated since), and the next
// reconcile after any failure (hasSynced is cleared). The resync's full
// pass is what repairs entries changed behind felt's back, as before.
//
// Nothing of it is O(peers) per lease change: the watch's answer tells the
// leases each pool's change upserted and removed (lease.PoolChange), the
// Manager keeps each pool's leases by subnet and notes, per network, the
// subnets changed since its last sync (attached.pending, leasewatch.go),
// and delta looks at those subnets only (deltaAt). A pool told whole (a
// Reset: read afresh) is compared whole, once (deltaAll).
// BenchmarkManagerChange measures a change from the Update to SyncPeers.

// peerOf is what of l a backend programs.
func peerOf(l lease.Lease) peer {
	return peer{hostID: l.HostID, publicIP: l.PublicIP, data: string(l.BackendData)}
}

// same reports whether l is p, without allocating for the backend data.
func (p peer) same(l lease.Lease) bool {
	return p.hostID == l.HostID && p.publicIP == l.PublicIP && p.data == string(l.BackendData)
}

// deltaAt is how the peers among leases (those isPeer keeps) differ from s
// at subnets: the leases of peers added or changed there, and the subnets
// of s no peer holds any more. A subnet no change touched is as s has it.
func (s peerSet) deltaAt(subnets map[netip.Prefix]bool, leases map[netip.Prefix]lease.Lease, isPeer func(lease.Lease) bool) (changed []lease.Lease, removed []netip.Prefix) {
	for subnet := range subnets {
		l, ok := leases[subnet]
		peer := ok && isPeer(l)
		old, was := s[subnet]
		switch {
		case peer && (!was || !old.same(l)):
			changed = append(changed, l)
		case !peer && was:
			removed = append(removed, subnet)
		}
	}
	return changed, removed
}

// deltaAll is deltaAt at every subnet, of leases and of s: O(pool).
func (s peerSet) deltaAll(leases map[netip.Prefix]lease.Lease, isPeer func(lease.Lease) bool) (changed []lease.Lease, removed []netip.Prefix) {
	for subnet, l := range leases {
		if !isPeer(l) {
			continue
		}
		if old, ok := s[subnet]; !ok || !old.same(l) {
			changed = append(changed, l)
		}
	}
	for subnet := range s {
		if l, ok := leases[subnet]; !ok || !isPeer(l) {
			removed = append(removed, subnet)
		}
	}
	return changed, removed
}

// apply makes s what delta's answer says it became.
func (s peerSet) apply(changed []lease.Lease, removed []netip.Prefix) {
	for _, l := range changed {
		s[l.Subnet] = peerOf(l)
	}
	for _, subnet := range removed {
		delete(s, subnet)
	}
}

// setSynced records the peers a sync is about to program, before the
// backend writes anything: a kernel event of that sync (a route it
// deletes) is judged against them (wantsRoute). Called with a.mu held;
// peersMu orders it with the event's reading.
func (a *attached) setSynced(update func()) {
	a.peersMu.Lock()
	defer a.peersMu.Unlock()
	update()
}

// wantsRoute reports whether dst is the subnet of a peer a's last sync
// programmed or is programming, or whether a has no such sync yet (so
// nothing can be ruled out). The deletion of a route to any other subnet
// (one a sync removes itself, or a stray) needs no repair.
func (a *attached) wantsRoute(dst netip.Prefix) bool {
	a.peersMu.Lock()
	defer a.peersMu.Unlock()
	if a.synced == nil {
		return true
	}
	_, ok := a.synced[dst]
	return ok
}

// syncDelta applies a change of n's peers through the backend's SyncPeers.
// It returns full when the backend asked for a full Sync instead (nothing
// recorded then), else SyncPeers' error. Called with a.mu held, for a
// network synced successfully before.
func (m *Manager) syncDelta(ctx context.Context, a *attached, ds DeltaSyncer, changed []lease.Lease, removed []netip.Prefix) (full bool, err error) {
	n := a.n
	a.setSynced(func() { a.synced.apply(changed, removed) })
	if err := ds.SyncPeers(ctx, n, changed, removed); err != nil {
		if errors.Is(err, ErrFullSyncNeeded) {
			m.cfg.Log.Debug("overlay delta sync declined; syncing every peer", "network", n.ID, "reason", err)
			return true, nil
		}
		return false, err
	}
	return false, nil
}
