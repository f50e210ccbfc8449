package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
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
	// VtepMAC is the vxlan backend's data: the owner's VTEP address.
	VtepMAC string `json:"vtepMAC,omitempty"`
	// Expiry zero means a permanent reservation, as in flannel.
	Expiry time.Time `json:"expiry,omitzero"`

	index uint64
}

// Owner is what a host puts in its leases.
type Owner struct {
	HostID   string
	PublicIP netip.Addr
	VtepMAC  string
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
}

// Acquire returns this host's lease in the pool: the one it already holds
// (updated in place if its public IP or VTEP changed), else Prefer if free,
// else a random free subnet. Every claim is one create-if-absent.
func (r *Registry) Acquire(ctx context.Context, req AcquireRequest) (Lease, error) {
	n := req.Network
	for attempt := 0; attempt < 10; attempt++ {
		leases, err := r.Leases(ctx, n.Pool)
		if err != nil {
			return Lease{}, err
		}
		now := r.clock.Now()
		taken := map[netip.Prefix]bool{}
		for _, l := range leases {
			if l.HostID == req.Owner.HostID && l.Subnet.Bits() == n.SubnetLen && inside(l.Subnet, req.Within) {
				return r.renew(ctx, l, req, now)
			}
			if l.Expired(now) {
				// A dead host's lease: remove it so the subnet can be reused.
				_ = r.store.DeleteCAS(ctx, r.leaseKey(n.Pool, l.Subnet), l.index)
				continue
			}
			taken[l.Subnet] = true
		}
		subnet, err := pick(n, req, taken)
		if err != nil {
			return Lease{}, err
		}
		l := Lease{Pool: n.Pool, Subnet: subnet, HostID: req.Owner.HostID, PublicIP: req.Owner.PublicIP, VtepMAC: req.Owner.VtepMAC}
		if req.TTL > 0 {
			l.Expiry = now.Add(req.TTL)
		}
		val, _ := json.Marshal(l)
		err = r.store.CAS(ctx, r.leaseKey(n.Pool, subnet), val, 0)
		if errors.Is(err, kv.ErrConflict) {
			continue // another host won that subnet; choose again
		}
		if err != nil {
			return Lease{}, fmt.Errorf("lease %s: %w", subnet, err)
		}
		return r.get(ctx, n.Pool, subnet)
	}
	return Lease{}, fmt.Errorf("pool %s: could not claim a subnet after 10 attempts (too many hosts racing), try again", n.Pool)
}

func inside(subnet, within netip.Prefix) bool {
	if !within.IsValid() {
		return true
	}
	return within.Overlaps(subnet)
}

// pick chooses the subnet to claim. Random rather than lowest-first, as
// flannel does, so hosts starting together rarely collide.
func pick(n Network, req AcquireRequest, taken map[netip.Prefix]bool) (netip.Prefix, error) {
	if req.Prefer.IsValid() && req.Prefer.Bits() == n.SubnetLen && n.Pool.Contains(req.Prefer.Addr()) &&
		inside(req.Prefer, req.Within) && !taken[req.Prefer] {
		return req.Prefer, nil
	}
	space := n.Pool
	if req.Within.IsValid() {
		space = req.Within
		if req.Within.Bits() > n.SubnetLen {
			// A range smaller than a host subnet: lease the subnet holding it.
			space = netip.PrefixFrom(req.Within.Addr(), n.SubnetLen).Masked()
		}
	}
	total := ipnet.Subnets(space, n.SubnetLen)
	var free []netip.Prefix
	for i := uint64(0); i < total; i++ {
		s := ipnet.Subnet(space, n.SubnetLen, i)
		if !taken[s] {
			free = append(free, s)
		}
	}
	if len(free) == 0 {
		return netip.Prefix{}, fmt.Errorf("pool %s: no free /%d subnet left in %s for this host (all %d are leased by other hosts)", n.Pool, n.SubnetLen, space, total)
	}
	return free[rand.IntN(len(free))], nil
}

// renew rewrites l with a fresh expiry and the owner's current public IP and
// VTEP: a host whose address changed keeps its subnet.
func (r *Registry) renew(ctx context.Context, l Lease, req AcquireRequest, now time.Time) (Lease, error) {
	next := l
	next.PublicIP = req.Owner.PublicIP
	if req.Owner.VtepMAC != "" {
		next.VtepMAC = req.Owner.VtepMAC
	}
	if req.TTL > 0 {
		next.Expiry = now.Add(req.TTL)
	} else {
		next.Expiry = time.Time{}
	}
	val, _ := json.Marshal(next)
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
	rest, err := r.Leases(ctx, pool)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		if err := r.deleteNetwork(ctx, pool); err != nil {
			return fmt.Errorf("network %s: %w", pool, err)
		}
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
