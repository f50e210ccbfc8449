package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
)

// AcquireRequest asks for a subnet of Network for Owner.
type AcquireRequest struct {
	Network Network
	Owner   Owner
	TTL     time.Duration // 0: permanent
	// Prefer is the subnet this host held before (saved locally); taken
	// again if it is still free, so containers are not stranded on restart.
	Prefer netip.Prefix
	// Within restricts the choice to subnets inside it (--ip-range).
	Within netip.Prefix
	// OnTakeover, if set, is told about every lease of another host ID
	// with this host's public IP that Acquire took over or removed (see
	// Acquire), so the caller can log it.
	OnTakeover func(old Lease, action string)

	// fence is the network record's version every lease write of this
	// Acquire checks (recordFence); set by Acquire.
	fence *recordFence
}

// Acquire returns this host's lease in the pool: the one it already holds
// (updated in place if its public IP or backend data changed), else Prefer if free,
// else a random free subnet. Every claim is one transaction: a
// create-if-absent of the lease's key (or a compare-and-set, for a renewal
// or a takeover), with the owner's entries in the owner index (owners.go).
//
// One public IP is one host, in a pool (as in flannel): peers send a
// subnet's traffic to its lease's public IP, so two live leases with the
// same IP can never both work. A lease of another host ID with this host's
// public IP is therefore an earlier incarnation of this host (its state
// directory was wiped, so it got a new host ID) that did not release it:
// Acquire takes it over, subnet included, instead of leasing a second
// subnet beside it, so peers replace its backend data (vxlan's VTEP MAC)
// rather than keep both (of several, the one at Prefer first). If that lease does not fit the request (outside Within, or another subnet
// length) or this host already holds a lease, it is removed instead. Such
// leases are found through the owner index: one an older felt wrote (it
// has no entries) is not, and this host leases a second subnet beside it
// until it expires, unless Acquire falls back to listing the pool.
//
// The network record is not written: every lease write checks, in its own
// transaction, that the record is at req.Network's version (or the one
// read since), not marked for deletion (recordFence, deleteNetwork). It is
// read only when that check fails, and made again from req.Network if a
// host releasing the pool's last lease removed it meanwhile.
//
// A lease this call created is removed again if Acquire then fails: the
// caller holds nothing, so nothing would release it. A lease held before
// (renewed or taken over) stays.
//
// Acquire does not list the pool in the usual cases (see claimFast): it
// reads Prefer's lease and the leases this host's entries in the owner
// index name, and tries random subnets one by one (probe.go): a handful of
// requests whatever the pool's size. Only what that cannot settle (a pool
// nearly full, a race lost) lists the pool's leases, as Acquire always did
// (claimListed). Expired leases are removed where Acquire meets them
// (RemoveExpired sweeps the rest).
func (r *Registry) Acquire(ctx context.Context, req AcquireRequest) (Lease, error) {
	var created createdLease
	req.fence = newFence(req.Network)
	l, err := r.claim(ctx, req, &created)
	if err != nil {
		if created.lease.Subnet.IsValid() {
			if derr := r.removeLease(ctx, created.lease, created.owners); derr != nil {
				err = errors.Join(err, fmt.Errorf("lease %s: remove after the failure: %w", created.lease.Subnet, derr))
			}
		}
		return Lease{}, err
	}
	return l, nil
}

// createdLease is a lease Acquire created, with the owner entries written
// with it (deletes at the lease's index), to be removed if Acquire fails.
type createdLease struct {
	lease  Lease
	owners []kv.Op
}

// removeLease removes l at its index (a lease Acquire created, and undoes
// on a failure; a lease released), with its owner entries in one
// transaction: owners are entry keys with their index, each known to name
// l (written with it, or read). A lease that changed meanwhile (another
// host removed it as expired, say) is not the caller's to remove: nil.
func (r *Registry) removeLease(ctx context.Context, l Lease, owners []kv.Op) error {
	key := r.leaseKey(l.Pool, l.Subnet)
	ops := append([]kv.Op{{Verb: kv.OpDeleteCAS, Key: key, Index: l.index}}, owners...)
	if _, err := r.store.Txn(ctx, ops); !errors.Is(err, kv.ErrConflict) {
		if err == nil && len(owners) == 0 {
			r.forgetOwner(ctx, l) // its entries were not known: by forgetOwner's rule
		}
		return err
	}
	// An entry was rewritten since (or the lease was): the lease alone.
	if err := r.store.DeleteCAS(ctx, key, l.index); err != nil {
		if errors.Is(err, kv.ErrConflict) {
			return nil
		}
		return err
	}
	r.forgetOwner(ctx, l)
	return nil
}

// claim is Acquire (and Renew) up to the lease written: the fast path, and
// the listing when that cannot settle the request. A lease it creates
// (rather than renews or takes over) is recorded in created.
func (r *Registry) claim(ctx context.Context, req AcquireRequest, created *createdLease) (Lease, error) {
	n := req.Network
	if !n.Pool.Addr().Is4() || n.SubnetLen < n.Pool.Bits() || n.SubnetLen > 32 {
		return Lease{}, fmt.Errorf("pool %s: subnet length /%d does not fit the pool", n.Pool, n.SubnetLen)
	}
	if space, err := spaceOf(n, req.Within); err == nil { // else the listing says what is wrong
		for range 3 {
			l, ok, err := r.claimFast(ctx, req, space, created)
			if errors.Is(err, errAgain) {
				continue
			}
			if err != nil || ok {
				return l, err
			}
			break
		}
	}
	return r.claimListed(ctx, req, created)
}

// claimListed is the claim that looks at every lease of the pool: the
// slow path, always right, taken when claimFast cannot settle the request.
func (r *Registry) claimListed(ctx context.Context, req AcquireRequest, created *createdLease) (Lease, error) {
	n := req.Network
	for attempt := 0; attempt < 10; attempt++ {
		leases, err := r.Leases(ctx, n.Pool)
		if err != nil {
			return Lease{}, err
		}
		now := r.clock.Now()
		var mine, stale []Lease
		var taken []netip.Prefix
		for _, l := range leases {
			switch {
			case l.HostID == req.Owner.HostID:
				if fits(n, req, l) {
					mine = append(mine, l)
				}
				taken = append(taken, l.Subnet)
			case l.Expired(now):
				// A dead host's lease: remove it so the subnet can be reused.
				_ = r.dropExpired(ctx, l)
			case req.Owner.PublicIP.IsValid() && l.PublicIP == req.Owner.PublicIP:
				stale = append(stale, l)
			default:
				taken = append(taken, l.Subnet)
			}
		}
		l, done, err := r.settle(ctx, req, mine, stale, now)
		if errors.Is(err, kv.ErrConflict) {
			continue // it changed meanwhile (renewed, or taken over by another): look again
		}
		if err != nil || done {
			return l, err
		}
		subnet, err := pick(n, req, taken)
		if err != nil {
			return Lease{}, err
		}
		l, err = r.create(ctx, req, subnet, now, created)
		if errors.Is(err, kv.ErrConflict) {
			continue // another host won that subnet; choose again
		}
		return l, err
	}
	return Lease{}, fmt.Errorf("pool %s: could not claim a subnet after 10 attempts (too many hosts racing), try again", n.Pool)
}

// settle applies the rule of Acquire to the leases found of this host
// (mine: its own that fit the request) and of its earlier incarnations
// (stale: live, another host ID, this host's public IP): renew its own,
// else take over a fitting stale one; the other stale ones go. done false:
// neither, a fresh subnet is to be leased. kv.ErrConflict: a lease changed
// meanwhile, look again.
func (r *Registry) settle(ctx context.Context, req AcquireRequest, mine, stale []Lease, now time.Time) (Lease, bool, error) {
	if len(mine) == 0 {
		// Prefer's first: the subnet this host's containers were on.
		i := slices.IndexFunc(stale, func(l Lease) bool { return l.Subnet == req.Prefer && fits(req.Network, req, l) })
		if i < 0 {
			i = slices.IndexFunc(stale, func(l Lease) bool { return fits(req.Network, req, l) })
		}
		if i >= 0 {
			old := stale[i]
			if err := r.dropStale(ctx, req, slices.Delete(slices.Clone(stale), i, i+1)); err != nil {
				return Lease{}, false, err
			}
			l, err := r.rewrite(ctx, old, req, now)
			if err != nil {
				return Lease{}, false, err
			}
			if req.OnTakeover != nil {
				req.OnTakeover(old, "taken over")
			}
			return l, true, nil
		}
	}
	if err := r.dropStale(ctx, req, stale); err != nil {
		return Lease{}, false, err
	}
	if len(mine) > 0 {
		l, err := r.rewrite(ctx, mine[0], req, now)
		return l, err == nil, err
	}
	return Lease{}, false, nil
}

// fits reports whether l is a lease req may have: of the pool's subnet
// length, inside the pool and inside req.Within.
func fits(n Network, req AcquireRequest, l Lease) bool {
	return l.Subnet.Bits() == n.SubnetLen && n.Pool.Contains(l.Subnet.Addr()) && inside(l.Subnet, req.Within)
}

// create leases subnet to req's owner: one transaction that creates the
// lease if its key is absent, checks that no lease holds a subnet around it
// (of a shorter length: see probe.go), and points the owner's entries at it.
func (r *Registry) create(ctx context.Context, req AcquireRequest, subnet netip.Prefix, now time.Time, created *createdLease) (Lease, error) {
	n := req.Network
	l := Lease{Pool: n.Pool, Subnet: subnet, HostID: req.Owner.HostID, PublicIP: req.Owner.PublicIP, BackendData: req.Owner.BackendData}
	if req.TTL > 0 {
		l.Expiry = now.Add(req.TTL)
	}
	val, err := json.Marshal(l)
	if err != nil {
		return Lease{}, fmt.Errorf("lease %s: %w", subnet, err)
	}
	ops := []kv.Op{{Verb: kv.OpCAS, Key: r.leaseKey(n.Pool, subnet), Value: val}}
	owners := r.ownerPuts(l)
	ops = append(ops, owners...)
	// One op more for the record's check (writeLease).
	if around := r.aroundChecks(n.Pool, subnet); len(ops)+len(around)+1 <= kv.MaxTxnOps {
		ops = append(around, ops...)
	}
	idx, err := r.writeLease(ctx, req.fence, ops)
	if err != nil {
		return Lease{}, fmt.Errorf("lease %s: %w", subnet, err)
	}
	got, err := r.decodeWritten(ctx, l, val, idx)
	if err != nil {
		return Lease{}, err
	}
	*created = createdLease{lease: got}
	for _, o := range owners {
		created.owners = append(created.owners, kv.Op{Verb: kv.OpDeleteCAS, Key: o.Key, Index: got.index})
	}
	return got, nil
}

// decodeWritten is the lease l as a read would return it after the
// transaction that wrote val at idx; read back if the store did not say
// the index.
func (r *Registry) decodeWritten(ctx context.Context, l Lease, val []byte, idx uint64) (Lease, error) {
	if idx == 0 {
		return r.get(ctx, l.Pool, l.Subnet)
	}
	ls := r.decodeLeases([]kv.Pair{{Key: r.leaseKey(l.Pool, l.Subnet), Value: val, ModifyIndex: idx}})
	if len(ls) != 1 {
		return Lease{}, fmt.Errorf("lease %s: unreadable record", l.Subnet)
	}
	return ls[0], nil
}

// dropExpired removes an expired lease, and its owner entries.
func (r *Registry) dropExpired(ctx context.Context, l Lease) error {
	err := r.store.DeleteCAS(ctx, r.leaseKey(l.Pool, l.Subnet), l.index)
	if err == nil {
		r.forgetOwner(ctx, l)
	}
	return err
}

// dropStale removes leases of earlier incarnations of this host (see
// Acquire). Each delete is conditional: a lease that changed meanwhile is
// looked at again (kv.ErrConflict).
func (r *Registry) dropStale(ctx context.Context, req AcquireRequest, stale []Lease) error {
	for _, l := range stale {
		if err := r.store.DeleteCAS(ctx, r.leaseKey(l.Pool, l.Subnet), l.index); err != nil {
			if errors.Is(err, kv.ErrConflict) {
				return err
			}
			return fmt.Errorf("lease %s of %s (this host's public IP %s): remove: %w", l.Subnet, l.HostID, l.PublicIP, err)
		}
		r.forgetOwner(ctx, l)
		if req.OnTakeover != nil {
			req.OnTakeover(l, "removed")
		}
	}
	return nil
}

func inside(subnet, within netip.Prefix) bool {
	if !within.IsValid() {
		return true
	}
	return within.Overlaps(subnet)
}

// pick chooses the subnet to claim. Random rather than lowest-first, as
// flannel does, so hosts starting together rarely collide. The choice is
// uniform among the free subnets, found by index arithmetic over the taken
// ones: memory and time grow with the number of leases, not with the
// number of subnets in the pool (a /8 in /30s has four million).
func pick(n Network, req AcquireRequest, taken []netip.Prefix) (netip.Prefix, error) {
	space, err := spaceOf(n, req.Within)
	if err != nil {
		return netip.Prefix{}, err
	}
	free := ipnet.NewFreeSubnets(space, n.SubnetLen, taken)
	if req.Prefer.IsValid() && n.Pool.Contains(req.Prefer.Addr()) && free.IsFree(req.Prefer) {
		return req.Prefer, nil
	}
	left := free.Free()
	if left == 0 {
		return netip.Prefix{}, fmt.Errorf("pool %s: no free /%d subnet left in %s for this host (all %d are leased by other hosts)", n.Pool, n.SubnetLen, space, free.Total())
	}
	return free.NthFree(rand.Uint64N(left)), nil
}

// spaceOf is where a subnet of n is chosen: the pool, or within (--ip-range)
// made at least one host subnet large.
func spaceOf(n Network, within netip.Prefix) (netip.Prefix, error) {
	space := n.Pool
	if within.IsValid() {
		space = within.Masked()
		if space.Bits() > n.SubnetLen {
			// A range smaller than a host subnet: lease the subnet holding it.
			space = netip.PrefixFrom(space.Addr(), n.SubnetLen).Masked()
		}
		if space.Bits() < n.Pool.Bits() || !n.Pool.Contains(space.Addr()) {
			return netip.Prefix{}, fmt.Errorf("pool %s: range %s is not inside the pool", n.Pool, within)
		}
	}
	return space, nil
}
