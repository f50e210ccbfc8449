package lease

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
)

// probeTries is how many random subnets Acquire tries before it lists the
// pool instead. A pool with a fraction f of its subnets taken misses them
// all with probability f^probeTries: never in practice up to 2/3 full
// (3e-6), 0.08% at 80%, 3% at 90%, and a full pool always, which the
// listing then says (pick's "no free subnet left"). A miss costs one small
// List (a third of a millisecond on a local Consul); the listing of 10,000
// leases costs a third of a second, hence many tries.
const probeTries = 32

// probe leases a random free subnet of space without listing the pool:
// candidates drawn at random (each once, skipping the ones in taken), each
// tried by tryCreate. ok false: every try missed.
func (r *Registry) probe(ctx context.Context, req AcquireRequest, space netip.Prefix, taken map[netip.Prefix]bool, now time.Time, created *createdLease) (Lease, bool, error) {
	n := req.Network
	total := ipnet.Subnets(space, n.SubnetLen)
	tried := map[uint64]bool{}
	for len(tried) < probeTries && uint64(len(tried)) < total {
		i := rand.Uint64N(total)
		if tried[i] {
			continue
		}
		tried[i] = true
		cand := ipnet.Subnet(space, n.SubnetLen, i)
		if taken[cand] {
			continue
		}
		l, ok, err := r.tryCreate(ctx, req, cand, now, created)
		if err != nil || ok {
			return l, ok, err
		}
	}
	return Lease{}, false, nil
}

// tryCreate leases cand if no live lease overlaps it. ok false: one does,
// or another host won it meanwhile.
//
// A pool's leases are normally all of one length (the network record's
// SubnetLen), where only a lease at cand's own key can overlap it, and the
// create-if-absent of that key is the guarantee against duplicates. But a
// record made again (its pool's last lease released, or the store lost
// its data) may carry another length while hosts still renew leases of the
// old one. So cand is checked against both kinds of overlap: leases inside
// it, found by listing the keys that share cand's whole octets (its own
// key and any smaller subnet's; a handful of keys, not the pool), and
// leases around it (shorter prefixes holding it), whose keys create checks
// absent in the very transaction that writes the lease. A lease of another
// length written between that listing and the create may still overlap:
// the same window the listing path has between its listing and its
// create.
func (r *Registry) tryCreate(ctx context.Context, req AcquireRequest, cand netip.Prefix, now time.Time, created *createdLease) (Lease, bool, error) {
	n := req.Network
	if len(r.aroundChecks(n.Pool, cand))+4 > kv.MaxTxnOps { // the lease, its two entries, the record's check
		return Lease{}, false, nil // a /32 of a /1, say: left to the listing
	}
	pairs, _, err := r.store.List(ctx, r.nearPrefix(n.Pool, cand))
	if err != nil {
		return Lease{}, false, err
	}
	for _, l := range r.decodeLeases(pairs) {
		if !l.Subnet.Overlaps(cand) {
			continue
		}
		// This host's own lease counts as taken too: the listing path
		// decides what to do with it.
		if l.HostID == req.Owner.HostID || !l.Expired(now) || r.dropExpired(ctx, l) != nil {
			return Lease{}, false, nil
		}
	}
	l, err := r.create(ctx, req, cand, now, created)
	if errors.Is(err, kv.ErrConflict) {
		return Lease{}, false, nil
	}
	return l, err == nil, err
}

// aroundChecks are the transaction ops that fail if a lease holds a prefix
// of the pool around subnet (a shorter one containing it).
func (r *Registry) aroundChecks(pool, subnet netip.Prefix) []kv.Op {
	var ops []kv.Op
	for bits := pool.Bits(); bits < subnet.Bits(); bits++ {
		ops = append(ops, kv.Op{Verb: kv.OpCheck, Key: r.leaseKey(pool, netip.PrefixFrom(subnet.Addr(), bits).Masked())})
	}
	return ops
}

// nearPrefix is the key prefix of the leases whose subnet starts with
// subnet's whole octets ("10.42.7." for 10.42.7.0/24): subnet's own key,
// and every subnet inside it, among the few others of that /8, /16 or /24.
func (r *Registry) nearPrefix(pool, subnet netip.Prefix) string {
	a := subnet.Addr().As4()
	var b strings.Builder
	b.WriteString(r.poolLeasesPrefix(pool))
	for i := range min(subnet.Bits()/8, 3) {
		b.WriteString(strconv.Itoa(int(a[i])))
		b.WriteByte('.')
	}
	return b.String()
}
