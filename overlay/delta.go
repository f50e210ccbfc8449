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
// What is O(peers) per lease change is in memory: the watch's answer holds
// every lease of the pool (lease.Update has no per-record change list), so
// delta walks them, keeping the peers (isPeer), against synced, with no
// allocation unless something changed. BenchmarkDelta measures it.

// peerOf is what of l a backend programs.
func peerOf(l lease.Lease) peer {
	return peer{hostID: l.HostID, publicIP: l.PublicIP, data: string(l.BackendData)}
}

// same reports whether l is p, without allocating for the backend data.
func (p peer) same(l lease.Lease) bool {
	return p.hostID == l.HostID && p.publicIP == l.PublicIP && p.data == string(l.BackendData)
}

// delta is how the peers among all (the leases isPeer keeps) differ from
// s: the leases of peers added or changed, and the subnets of s no peer
// holds any more. It walks all once and looks each peer up in s, copying
// no lease; only when some subnet of s was not seen does it index the
// peers to find which. A pool holds one lease per subnet (one store key
// each).
func (s peerSet) delta(all []lease.Lease, isPeer func(lease.Lease) bool) (changed []lease.Lease, removed []netip.Prefix) {
	seen := 0
	for _, l := range all {
		if !isPeer(l) {
			continue
		}
		old, ok := s[l.Subnet]
		if ok {
			seen++
		}
		if !ok || !old.same(l) {
			changed = append(changed, l)
		}
	}
	if seen == len(s) {
		return changed, nil
	}
	now := make(map[netip.Prefix]struct{}, len(s))
	for _, l := range all {
		if isPeer(l) {
			now[l.Subnet] = struct{}{}
		}
	}
	for subnet := range s {
		if _, ok := now[subnet]; !ok {
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
