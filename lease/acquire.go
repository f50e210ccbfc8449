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
}

// Acquire returns this host's lease in the pool: the one it already holds
// (updated in place if its public IP or backend data changed), else Prefer if free,
// else a random free subnet. Every claim is one create-if-absent (or one
// compare-and-set, for a takeover).
//
// One public IP is one host, in a pool (as in flannel): peers send a
// subnet's traffic to its lease's public IP, so two live leases with the
// same IP can never both work. A lease of another host ID with this host's
// public IP is therefore an earlier incarnation of this host (its state
// directory was wiped, so it got a new host ID) that did not release it:
// Acquire takes it over, subnet included, instead of leasing a second
// subnet beside it, so peers replace its backend data (vxlan's VTEP MAC)
// rather than keep both. If that lease does not fit the request (outside Within, or another subnet
// length) or this host already holds a lease, it is removed instead.
//
// The network record is rewritten after the lease (see deleteNetwork), or
// made again from req.Network if a host releasing the pool's last lease
// removed it meanwhile.
//
// A lease this call created is removed again if Acquire then fails: the
// caller holds nothing, so nothing would release it. A lease held before
// (renewed or taken over) stays.
func (r *Registry) Acquire(ctx context.Context, req AcquireRequest) (Lease, error) {
	var created kv.Pair
	l, err := r.claim(ctx, req, &created)
	if err == nil {
		err = r.keepNetwork(ctx, req.Network)
	}
	if err != nil {
		if created.Key != "" {
			if derr := r.store.DeleteCAS(ctx, created.Key, created.ModifyIndex); derr != nil && !errors.Is(derr, kv.ErrConflict) {
				err = errors.Join(err, fmt.Errorf("lease %s: remove after the failure: %w", l.Subnet, derr))
			}
		}
		return Lease{}, err
	}
	return l, nil
}

// claim is Acquire (and Renew) up to the lease written: the one loop that
// looks at the pool's leases and writes this host's. A lease it creates
// (rather than renews or takes over) is recorded in created.
func (r *Registry) claim(ctx context.Context, req AcquireRequest, created *kv.Pair) (Lease, error) {
	n := req.Network
	if !n.Pool.Addr().Is4() || n.SubnetLen < n.Pool.Bits() || n.SubnetLen > 32 {
		return Lease{}, fmt.Errorf("pool %s: subnet length /%d does not fit the pool", n.Pool, n.SubnetLen)
	}
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
				if l.Subnet.Bits() == n.SubnetLen && inside(l.Subnet, req.Within) {
					mine = append(mine, l)
				}
				taken = append(taken, l.Subnet)
			case l.Expired(now):
				// A dead host's lease: remove it so the subnet can be reused.
				_ = r.store.DeleteCAS(ctx, r.leaseKey(n.Pool, l.Subnet), l.index)
			case req.Owner.PublicIP.IsValid() && l.PublicIP == req.Owner.PublicIP:
				stale = append(stale, l)
			default:
				taken = append(taken, l.Subnet)
			}
		}
		if len(mine) == 0 {
			if i := slices.IndexFunc(stale, func(l Lease) bool {
				return l.Subnet.Bits() == n.SubnetLen && n.Pool.Contains(l.Subnet.Addr()) && inside(l.Subnet, req.Within)
			}); i >= 0 {
				old := stale[i]
				stale = slices.Delete(stale, i, i+1)
				if err := r.dropStale(ctx, req, stale); err != nil {
					if errors.Is(err, kv.ErrConflict) {
						continue
					}
					return Lease{}, err
				}
				l, err := r.rewrite(ctx, old, req, now)
				if errors.Is(err, kv.ErrConflict) {
					continue // it changed meanwhile (renewed, or taken over by another): look again
				}
				if err == nil && req.OnTakeover != nil {
					req.OnTakeover(old, "taken over")
				}
				return l, err
			}
		}
		if err := r.dropStale(ctx, req, stale); err != nil {
			if errors.Is(err, kv.ErrConflict) {
				continue
			}
			return Lease{}, err
		}
		if len(mine) > 0 {
			l, err := r.rewrite(ctx, mine[0], req, now)
			if errors.Is(err, kv.ErrConflict) {
				continue
			}
			return l, err
		}
		subnet, err := pick(n, req, taken)
		if err != nil {
			return Lease{}, err
		}
		l := Lease{Pool: n.Pool, Subnet: subnet, HostID: req.Owner.HostID, PublicIP: req.Owner.PublicIP, BackendData: req.Owner.BackendData}
		if req.TTL > 0 {
			l.Expiry = now.Add(req.TTL)
		}
		val, err := json.Marshal(l)
		if err != nil {
			return Lease{}, fmt.Errorf("lease %s: %w", subnet, err)
		}
		err = r.store.CAS(ctx, r.leaseKey(n.Pool, subnet), val, 0)
		if errors.Is(err, kv.ErrConflict) {
			continue // another host won that subnet; choose again
		}
		if err != nil {
			return Lease{}, fmt.Errorf("lease %s: %w", subnet, err)
		}
		got, err := r.get(ctx, n.Pool, subnet)
		if err == nil {
			*created = kv.Pair{Key: r.leaseKey(n.Pool, subnet), ModifyIndex: got.index}
		}
		return got, err
	}
	return Lease{}, fmt.Errorf("pool %s: could not claim a subnet after 10 attempts (too many hosts racing), try again", n.Pool)
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
	space := n.Pool
	if req.Within.IsValid() {
		space = req.Within.Masked()
		if space.Bits() > n.SubnetLen {
			// A range smaller than a host subnet: lease the subnet holding it.
			space = netip.PrefixFrom(space.Addr(), n.SubnetLen).Masked()
		}
		if space.Bits() < n.Pool.Bits() || !n.Pool.Contains(space.Addr()) {
			return netip.Prefix{}, fmt.Errorf("pool %s: range %s is not inside the pool", n.Pool, req.Within)
		}
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
