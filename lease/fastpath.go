package lease

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
)

// errAgain is claimFast's "a lease changed meanwhile: look again".
var errAgain = errors.New("a lease changed meanwhile")

// claimFast is claim without listing the pool. It reads at most three
// leases: Prefer's, and those this host's entries in the owner index
// (owners.go) name, by host ID and by public IP. What they say is settled
// as the listing would (settle): this host's own lease renewed, else an
// earlier incarnation's taken over, the others of its public IP removed.
// A fresh subnet is Prefer if free, else a random one (probe). ok false:
// it could not settle the request (every probe missed: a pool nearly
// full), and the caller lists the pool (claimListed), which is always
// right. errAgain: a lease it read changed before it could write it (two
// writers of one lease, rare); the caller tries again.
//
// What it cannot see is what the index does not name: a lease written by
// an older felt, or a second lease of this host's public IP. Acquire then
// leases a fresh subnet beside it, as if the old one were another host's;
// it goes when it expires.
func (r *Registry) claimFast(ctx context.Context, req AcquireRequest, space netip.Prefix, created *createdLease) (Lease, bool, error) {
	n, me := req.Network, req.Owner
	now := r.clock.Now()
	prefer := req.Prefer
	if !prefer.IsValid() || prefer != prefer.Masked() || prefer.Bits() != n.SubnetLen || !space.Contains(prefer.Addr()) {
		prefer = netip.Prefix{}
	}

	// Leases read, by subnet; unreadable records count as taken.
	found := map[netip.Prefix]Lease{}
	taken := map[netip.Prefix]bool{}
	absent := map[netip.Prefix]bool{}
	read := func(s netip.Prefix) (Lease, bool, error) {
		if l, ok := found[s]; ok {
			return l, true, nil
		}
		if absent[s] || taken[s] {
			return Lease{}, false, nil
		}
		p, err := r.store.Get(ctx, r.leaseKey(n.Pool, s))
		if errors.Is(err, kv.ErrNotFound) {
			absent[s] = true
			return Lease{}, false, nil
		}
		if err != nil {
			return Lease{}, false, fmt.Errorf("lease %s: %w", s, err)
		}
		ls := r.decodeLeases([]kv.Pair{p})
		if len(ls) != 1 {
			taken[s] = true
			return Lease{}, false, nil
		}
		found[s] = ls[0]
		return ls[0], true, nil
	}

	if prefer.IsValid() {
		l, ok, err := read(prefer)
		if err != nil {
			return Lease{}, false, err
		}
		if ok && l.HostID == me.HostID && fits(n, req, l) {
			// A renewal, or a restart: this host's lease where it left it.
			l, err := r.rewrite(ctx, l, req, now)
			if errors.Is(err, kv.ErrConflict) {
				return Lease{}, false, errAgain
			}
			return l, err == nil, err
		}
	}

	// hint reads the lease an entry names and keeps it if belongs says it
	// is still the entry's; else the entry dangles, and goes.
	hint := func(key string, belongs func(Lease) bool) error {
		e, p, err := r.ownerHint(ctx, key)
		if err != nil || p.Key == "" {
			return err
		}
		if e.Subnet.IsValid() && e.Subnet.Addr().Is4() && n.Pool.Contains(e.Subnet.Addr()) && e.Subnet.Bits() >= n.Pool.Bits() {
			l, ok, err := read(e.Subnet)
			if err != nil {
				return err
			}
			if ok && belongs(l) {
				return nil
			}
		}
		_ = r.store.DeleteCAS(ctx, key, p.ModifyIndex)
		return nil
	}
	if err := hint(r.hostOwnerKey(n.Pool, me.HostID), func(l Lease) bool { return l.HostID == me.HostID }); err != nil {
		return Lease{}, false, err
	}
	if me.PublicIP.IsValid() {
		if err := hint(r.ipOwnerKey(n.Pool, me.PublicIP), func(l Lease) bool { return l.PublicIP == me.PublicIP }); err != nil {
			return Lease{}, false, err
		}
	}

	var mine, stale []Lease
	preferFree := prefer.IsValid() && absent[prefer]
	// In key order, as the listing has them: the choice among several is
	// the same.
	subnets := slices.SortedFunc(maps.Keys(found), func(a, b netip.Prefix) int {
		return strings.Compare(ipnet.Key(a), ipnet.Key(b))
	})
	for _, s := range subnets {
		l := found[s]
		switch {
		case l.HostID == me.HostID:
			if fits(n, req, l) {
				mine = append(mine, l)
			} else {
				taken[l.Subnet] = true
			}
		case l.Expired(now):
			if r.dropExpired(ctx, l) == nil && l.Subnet == prefer {
				preferFree = true
			}
		case me.PublicIP.IsValid() && l.PublicIP == me.PublicIP:
			stale = append(stale, l)
		default:
			taken[l.Subnet] = true
		}
	}
	l, done, err := r.settle(ctx, req, mine, stale, now)
	if errors.Is(err, kv.ErrConflict) {
		return Lease{}, false, errAgain
	}
	if err != nil || done {
		return l, done, err
	}
	if preferFree {
		l, ok, err := r.tryCreate(ctx, req, prefer, now, created)
		if err != nil || ok {
			return l, ok, err
		}
	}
	if prefer.IsValid() {
		taken[prefer] = true // tried, or held
	}
	return r.probe(ctx, req, space, taken, now, created)
}
