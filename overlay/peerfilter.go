package overlay

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/felt-net/felt/lease"
)

// A lease CheckPeer refuses is another host's doing (a bad or hostile
// record, a host with no usable address): it is not programmed, and it is
// no failure of this host's sync. The Manager drops it from a network's
// peers (isPeer: every Sync, SyncPeers and Check sees the peers without
// it) rather than each backend judging it: a backend that failed its Sync
// for it turned deltas off and retried a full pass every few seconds while
// the lease lasted. A refused lease is logged once, not at every pass.
//
// No backend routes a refused lease's subnet. For wireguard that is safe
// as it is for the subnets of no lease: the pool's blackhole, which Setup
// puts back before every Sync, drops the subnet's traffic instead of it
// leaving by the default route in clear.

// accepts reports whether l, a live lease of n's pool held by another
// host, may be programmed (CheckPeer, and the backend's own check of its
// data in the lease: PeerChecker), logging a refusal the first time.
func (m *Manager) accepts(n Network, l lease.Lease, now time.Time) bool {
	var err error
	if !accepted(&n, &l) { // CheckPeer's shortcut, without its copies
		err = checkPeer(n, l)
	}
	if err == nil {
		pc, ok := m.cfg.Backends.lookup(n.Backend).(PeerChecker)
		if !ok {
			return true
		}
		if err = pc.CheckPeerData(n, l); err == nil {
			return true
		}
	}
	m.refused.note(m.cfg.Log, n, l, err.Error(), now)
	return false
}

// refusals are the refused leases already logged, so that each is logged
// once: the peers are computed at every lease change and resync, and by
// status, health and the prober. A lease is told apart by pool, subnet and
// holder; it is logged again when the reason changes (another public IP),
// and after it went unseen for refusalMemory (gone, or come back). The
// zero value is ready to use.
type refusals struct {
	mu     sync.Mutex
	seen   map[refusalKey]refusal
	pruned time.Time
}

type refusalKey struct {
	pool, subnet netip.Prefix
	hostID       string
}

type refusal struct {
	why  string
	last time.Time // last seen refused
}

// refusalMemory is how long a refused lease unseen is remembered: the
// peers are computed at least every resync (30 s by default), so a lease
// still there is seen long before; one seen again later is logged again.
const refusalMemory = 10 * time.Minute

// note records that l was refused for why at now, logging it when it was
// not already.
func (r *refusals) note(log *slog.Logger, n Network, l lease.Lease, why string, now time.Time) {
	k := refusalKey{pool: l.Pool, subnet: l.Subnet, hostID: l.HostID}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[refusalKey]refusal{}
	}
	if now.Sub(r.pruned) > refusalMemory/10 {
		for k, v := range r.seen {
			if now.Sub(v.last) > refusalMemory {
				delete(r.seen, k)
			}
		}
		r.pruned = now
	}
	old, ok := r.seen[k]
	r.seen[k] = refusal{why: why, last: now}
	if ok && old.why == why {
		return
	}
	log.Warn("overlay: a peer's lease is refused: its subnet is not programmed", "network", n.ID, "pool", l.Pool,
		"host", l.HostID, "subnet", l.Subnet, "publicIP", l.PublicIP, "why", why)
}
