package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
)

// Lease says one host owns one subnet of a pool until Expiry.
type Lease struct {
	Pool     netip.Prefix `json:"pool"`
	Subnet   netip.Prefix `json:"subnet"`
	HostID   string       `json:"hostID"`
	PublicIP netip.Addr   `json:"publicIP"`
	// BackendData is what the owner's backends publish for their peers (a
	// JSON object, opaque to lease; vxlan's VTEP MAC, say). Its keys are
	// flattened into the record (record.go), where they have always been.
	BackendData json.RawMessage `json:"-"`
	// Expiry zero means a permanent reservation, as in flannel.
	Expiry time.Time `json:"expiry,omitzero"`

	index uint64
}

// Owner is what a host puts in its leases.
type Owner struct {
	HostID   string
	PublicIP netip.Addr
	// BackendData goes into the owner's leases as Lease.BackendData.
	BackendData json.RawMessage
}

// Expired reports whether the lease is past its expiry at now.
func (l Lease) Expired(now time.Time) bool { return !l.Expiry.IsZero() && now.After(l.Expiry) }

func (r *Registry) poolLeasesPrefix(pool netip.Prefix) string {
	return r.LeasesPrefix() + ipnet.Key(pool) + "/"
}

func (r *Registry) leaseKey(pool, subnet netip.Prefix) string {
	return r.poolLeasesPrefix(pool) + ipnet.Key(subnet)
}

// DecodeLeases turns the pairs of a List or Wait on LeasesPrefix into leases.
// Records that do not parse are skipped: one bad key must not stop a host
// from programming all the others.
func DecodeLeases(pairs []kv.Pair) []Lease {
	out := make([]Lease, 0, len(pairs))
	for _, p := range pairs {
		var l Lease
		if err := json.Unmarshal(p.Value, &l); err != nil || !l.Subnet.IsValid() {
			continue
		}
		l.index = p.ModifyIndex
		out = append(out, l)
	}
	return out
}

// Leases returns the current leases of pool, expired ones included.
func (r *Registry) Leases(ctx context.Context, pool netip.Prefix) ([]Lease, error) {
	pairs, _, err := r.store.List(ctx, r.poolLeasesPrefix(pool))
	if err != nil {
		return nil, fmt.Errorf("leases of %s: %w", pool, err)
	}
	return DecodeLeases(pairs), nil
}

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
// subnet beside it, so peers replace its backend data (vxlan's VTEP MAC) rather than keep both.
// If that lease does not fit the request (outside Within, or another subnet
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
	l, err := r.acquire(ctx, req, &created)
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

// acquire is Acquire up to the lease written; a lease it creates (rather
// than renews or takes over) is recorded in created.
func (r *Registry) acquire(ctx context.Context, req AcquireRequest, created *kv.Pair) (Lease, error) {
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
				l, err := r.renew(ctx, old, req, now)
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
			l, err := r.renew(ctx, mine[0], req, now)
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

// renew rewrites l with a fresh expiry and the owner's current public IP and
// backend data: a host whose address changed keeps its subnet.
func (r *Registry) renew(ctx context.Context, l Lease, req AcquireRequest, now time.Time) (Lease, error) {
	next := l
	next.PublicIP = req.Owner.PublicIP
	if !emptyData(req.Owner.BackendData) || next.HostID != req.Owner.HostID {
		next.BackendData = req.Owner.BackendData // a taken-over lease keeps nothing of the old host's
	}
	next.HostID = req.Owner.HostID
	if req.TTL > 0 {
		next.Expiry = now.Add(req.TTL)
	} else {
		next.Expiry = time.Time{}
	}
	val, err := json.Marshal(next)
	if err != nil {
		return Lease{}, fmt.Errorf("lease %s: renew: %w", l.Subnet, err)
	}
	if err := r.store.CAS(ctx, r.leaseKey(l.Pool, l.Subnet), val, l.index); err != nil {
		return Lease{}, fmt.Errorf("lease %s: renew: %w", l.Subnet, err)
	}
	return r.get(ctx, l.Pool, l.Subnet)
}

// Renew extends the lease held by owner on subnet. A lease that vanished (it
// expired and a peer removed it) is claimed again if the subnet is free.
func (r *Registry) Renew(ctx context.Context, n Network, subnet netip.Prefix, owner Owner, ttl time.Duration) (Lease, error) {
	return r.Acquire(ctx, AcquireRequest{Network: n, Owner: owner, TTL: ttl, Prefer: subnet, Within: subnet})
}

func (r *Registry) get(ctx context.Context, pool, subnet netip.Prefix) (Lease, error) {
	p, err := r.store.Get(ctx, r.leaseKey(pool, subnet))
	if err != nil {
		return Lease{}, fmt.Errorf("lease %s: %w", subnet, err)
	}
	ls := DecodeLeases([]kv.Pair{p})
	if len(ls) != 1 {
		return Lease{}, fmt.Errorf("lease %s: unreadable record", subnet)
	}
	return ls[0], nil
}

// Release gives up hostID's lease on subnet (a no-op if it is not held by
// hostID), and removes the network record when no host holds a lease any more.
func (r *Registry) Release(ctx context.Context, pool, subnet netip.Prefix, hostID string) error {
	p, err := r.store.Get(ctx, r.leaseKey(pool, subnet))
	switch {
	case errors.Is(err, kv.ErrNotFound):
	case err != nil:
		return fmt.Errorf("lease %s: %w", subnet, err)
	default:
		ls := DecodeLeases([]kv.Pair{p})
		if len(ls) == 1 && ls[0].HostID == hostID {
			if err := r.store.DeleteCAS(ctx, p.Key, p.ModifyIndex); err != nil && !errors.Is(err, kv.ErrConflict) {
				return fmt.Errorf("lease %s: release: %w", subnet, err)
			}
		}
	}
	return r.ForgetNetwork(ctx, pool)
}

// ForgetNetwork removes the network record of pool (and its VNI claim) if
// no lease of pool is left: after the last release, and to undo the record
// of a request that failed before it got a lease, so that a refused request
// leaves nothing behind.
func (r *Registry) ForgetNetwork(ctx context.Context, pool netip.Prefix) error {
	if err := r.deleteNetwork(ctx, pool); err != nil {
		return fmt.Errorf("network %s: %w", pool, err)
	}
	return nil
}

// RemoveExpired deletes leases past their expiry (hosts that died without
// releasing); each delete is conditional, so a lease renewed meanwhile stays.
func (r *Registry) RemoveExpired(ctx context.Context, leases []Lease) int {
	now := r.clock.Now()
	removed := 0
	for _, l := range leases {
		if l.Expired(now) && r.store.DeleteCAS(ctx, r.leaseKey(l.Pool, l.Subnet), l.index) == nil {
			removed++
		}
	}
	return removed
}

// PoolOfKey extracts the pool from a lease key under LeasesPrefix.
func (r *Registry) PoolOfKey(key string) (netip.Prefix, bool) {
	rest := strings.TrimPrefix(key, r.LeasesPrefix())
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return netip.Prefix{}, false
	}
	p, err := ipnet.ParseKey(rest[:i])
	return p, err == nil
}
