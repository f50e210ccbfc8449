package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// poolIDPrefix starts every pool ID felt hands out.
const poolIDPrefix = "felt/"

// poolIDOf renders a deterministic ID for (pool, range): the same request after
// a restart gets the same ID, and the ID alone tells which pool it names.
func poolIDOf(pool, rng netip.Prefix) string {
	id := poolIDPrefix + pool.String()
	if rng.IsValid() {
		id += "/" + rng.String()
	}
	return id
}

// parsePoolID is the inverse of poolIDOf.
func parsePoolID(id string) (pool, rng netip.Prefix, err error) {
	rest, ok := strings.CutPrefix(id, poolIDPrefix)
	parts := strings.Split(rest, "/")
	if !ok || (len(parts) != 2 && len(parts) != 4) {
		return pool, rng, fmt.Errorf("pool ID %q was not made by felt", id)
	}
	if pool, err = netip.ParsePrefix(parts[0] + "/" + parts[1]); err != nil {
		return pool, rng, fmt.Errorf("pool ID %q: %w", id, err)
	}
	if len(parts) == 4 {
		if rng, err = netip.ParsePrefix(parts[2] + "/" + parts[3]); err != nil {
			return pool, rng, fmt.Errorf("pool ID %q: %w", id, err)
		}
	}
	return pool, rng, nil
}

// validPoolID reports whether id is a PoolID as felt makes them, in
// canonical form: anything else names no pool of felt's (and two spellings
// must not reach the same record).
func validPoolID(id string) bool {
	pool, rng, err := parsePoolID(id)
	return err == nil && poolIDOf(pool, rng) == id
}

// Options are the --ipam-opt keys felt understands.
var allowedIPAMOptions = []string{"subnet_len"}

// parseSubnetLen reads --ipam-opt subnet_len: the length of each host's
// subnet, between the pool's length and /30 (a /31 or /32 has no room for a
// gateway and a container).
func parseSubnetLen(opts map[string]string, pool netip.Prefix) (int, error) {
	for k := range opts {
		if k != "subnet_len" {
			return 0, fmt.Errorf("unknown --ipam-opt %q: felt's IPAM accepts only %s", k, strings.Join(allowedIPAMOptions, ", "))
		}
	}
	v, ok := opts["subnet_len"]
	if !ok {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimPrefix(v, "/"))
	if err != nil || n < pool.Bits() || n > 30 {
		return 0, fmt.Errorf("--ipam-opt subnet_len=%s: must be a number from %d to 30 (the prefix length of each host's subnet inside %s)", v, pool.Bits(), pool)
	}
	return n, nil
}

// RequestPool registers a pool: it leases (or finds) this host's subnet of
// req.Pool and returns that subnet as the pool Docker will show and check
// --ip against, with its first address as the gateway.
//
// Every check comes before the first write: a refused request leaves
// nothing in the local state or the shared store (a stray network record
// would make every overlapping pool refused, cluster-wide). The one step
// that can fail after the network record is written, the lease, undoes the
// record if this request made it.
func (d *Driver) RequestPool(ctx context.Context, req *api.RequestPoolRequest) (*api.RequestPoolResponse, error) {
	if req == nil {
		return nil, errors.New("empty RequestPool request")
	}
	if req.V6 {
		return nil, errors.New("felt supports IPv4 only: create the network without --ipv6")
	}
	if req.Pool == "" {
		// Without this error Docker would keep proposing default pools.
		return nil, errors.New("felt needs --subnet: the pool shared by every host of the network, the same on each (e.g. --subnet 10.42.0.0/16)")
	}
	pool, err := ipnet.ParsePrefix(req.Pool)
	if err != nil {
		return nil, fmt.Errorf("--subnet: %w", err)
	}
	if err := checkPoolRange(pool); err != nil {
		return nil, err
	}
	var rng netip.Prefix
	if req.SubPool != "" {
		if rng, err = ipnet.ParsePrefix(req.SubPool); err != nil {
			return nil, fmt.Errorf("--ip-range: %w", err)
		}
		if !pool.Contains(rng.Addr()) || rng.Bits() < pool.Bits() {
			return nil, fmt.Errorf("--ip-range %s is not inside --subnet %s", rng, pool)
		}
	}
	subnetLen, err := parseSubnetLen(req.Options, pool)
	if err != nil {
		return nil, err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	id := poolIDOf(pool, rng)
	p, found, err := d.cfg.State.Pool(ctx, id)
	if err != nil {
		return nil, err
	}
	if found {
		if subnetLen != 0 && p.Subnet.Bits() != subnetLen {
			return nil, fmt.Errorf("pool %s is in use on this host with subnet_len=%d; asked for subnet_len=%d", pool, p.Subnet.Bits(), subnetLen)
		}
		p.Refs++
		if err := d.cfg.State.PutPool(ctx, p); err != nil {
			return nil, err
		}
		d.cfg.Log.Debug("pool referenced again", "pool", id, "refs", p.Refs)
		return poolResponse(p), nil
	}
	if err := d.checkLocalOverlap(ctx, pool); err != nil {
		return nil, err
	}
	// An earlier felt of this host goes first: its bridge in the pool is
	// no other felt's, and must not refuse the pool (forget.go).
	if err := d.forgetEarlierIn(ctx, pool); err != nil {
		return nil, err
	}
	if d.cfg.HostNetworks != nil {
		nets, err := d.cfg.HostNetworks(ctx, pool)
		if err != nil {
			return nil, fmt.Errorf("--subnet %s: listing this host's networks: %w", pool, err)
		}
		if err := checkHostNetworks(pool, nets); err != nil {
			return nil, err
		}
	}
	owner, err := d.cfg.Owner(ctx, pool)
	if err != nil {
		return nil, err
	}
	prefer, err := d.cfg.State.LastSubnet(ctx, pool)
	if err != nil {
		return nil, err
	}
	_, err = d.cfg.Registry.GetNetwork(ctx, pool)
	recordExisted := err == nil
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return nil, fmt.Errorf("network %s: %w", pool, err)
	}

	// Checks done; writes from here on.
	n, err := d.cfg.Registry.ReservePool(ctx, pool, subnetLen)
	if err != nil {
		return nil, err
	}
	l, err := d.cfg.Registry.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner, TTL: d.cfg.TTL, Prefer: prefer, Within: rng, OnTakeover: d.logTakeover})
	if err != nil {
		if !recordExisted {
			if ferr := d.cfg.Registry.ForgetNetwork(ctx, pool); ferr != nil {
				d.cfg.Log.Warn("could not remove the network record of a refused pool", "pool", pool, "err", ferr)
			}
		}
		return nil, err
	}
	p = state.Pool{ID: id, Pool: pool, Range: rng, Subnet: l.Subnet, Gateway: ipnet.Nth(l.Subnet, 1), Refs: 1}
	// A taken-over lease's earlier felt goes before CreateNetwork makes the
	// new bridge: its bridge would hold the subnet's route.
	err = d.ForgetEarlier(ctx)
	if err == nil {
		err = d.saveNewPool(ctx, p)
	}
	if err != nil {
		if others, _ := d.subnetHolders(ctx, p); len(others) == 0 {
			if rerr := d.cfg.Registry.Release(ctx, pool, l.Subnet, owner.HostID); rerr != nil {
				d.cfg.Log.Warn("could not release lease; it will expire", "subnet", l.Subnet, "err", rerr)
			}
		}
		return nil, err
	}
	d.cfg.Log.Info("pool registered", "pool", pool, "range", req.SubPool, "subnet", l.Subnet)
	return poolResponse(p), nil
}

// saveNewPool records a new pool request locally, or none of it.
func (d *Driver) saveNewPool(ctx context.Context, p state.Pool) error {
	err := newAllocator(d.cfg.State, p).ensure(ctx, p.Gateway, state.KindGateway)
	if err == nil {
		err = d.cfg.State.PutPool(ctx, p)
	}
	if err == nil {
		err = d.cfg.State.PutLastSubnet(ctx, p.Pool, p.Subnet)
	}
	if err != nil {
		_ = d.cfg.State.DeletePool(ctx, p.ID)
		if others, _ := d.subnetHolders(ctx, p); len(others) == 0 {
			_ = newAllocator(d.cfg.State, p).releaseAll(ctx)
		}
	}
	return err
}

func poolResponse(p state.Pool) *api.RequestPoolResponse {
	return &api.RequestPoolResponse{
		PoolID: p.ID,
		Pool:   p.Subnet.String(),
		Data:   map[string]string{gatewayType: netip.PrefixFrom(p.Gateway, p.Subnet.Bits()).String()},
	}
}

// checkLocalOverlap refuses a pool that overlaps another pool held on this
// host: two bridges with overlapping subnets would make routing ambiguous.
func (d *Driver) checkLocalOverlap(ctx context.Context, pool netip.Prefix) error {
	pools, err := d.cfg.State.Pools(ctx)
	if err != nil {
		return err
	}
	for _, p := range pools {
		if p.Pool != pool && p.Pool.Overlaps(pool) {
			return fmt.Errorf("--subnet %s overlaps the pool %s of another felt network on this host", pool, p.Pool)
		}
	}
	return nil
}

// ReleasePool drops one reference of the pool request. The last one frees
// the addresses that pool request allocated; the host's subnet (its
// gateway, its lease) goes only with the last pool request holding it: the
// same --subnet with another --ip-range shares the subnet, and its live
// containers keep their addresses. Unknown pools are fine (idempotent).
func (d *Driver) ReleasePool(ctx context.Context, req *api.ReleasePoolRequest) error {
	if req == nil {
		return nil
	}
	return d.withHeld(ctx, req.PoolID, d.releasePool)
}

// releasePool is ReleasePool of the held pool request p.
func (d *Driver) releasePool(ctx context.Context, p state.Pool) error {
	if p.Refs > 1 {
		p.Refs--
		return d.cfg.State.PutPool(ctx, p)
	}
	others, err := d.subnetHolders(ctx, p)
	if err != nil {
		return err
	}
	alloc := newAllocator(d.cfg.State, p)
	if len(others) > 0 {
		if err := alloc.releaseOwn(ctx); err != nil {
			return err
		}
		if err := d.cfg.State.DeletePool(ctx, p.ID); err != nil {
			return err
		}
		d.cfg.Log.Info("pool released; its subnet stays with the other pool requests sharing it", "pool", p.ID, "subnet", p.Subnet, "sharedWith", others)
		return nil
	}
	if err := alloc.releaseAll(ctx); err != nil {
		return err
	}
	if err := d.cfg.State.DeletePool(ctx, p.ID); err != nil {
		return err
	}
	d.cfg.Log.Info("pool released", "pool", p.Pool, "subnet", p.Subnet)
	// The pool is gone locally whatever happens next. If the store is
	// unreachable the lease is simply not renewed and expires.
	d.releaseLease(ctx, p, "could not release lease; it will expire")
	return nil
}

// subnetHolders lists the other pool requests holding p's subnet.
func (d *Driver) subnetHolders(ctx context.Context, p state.Pool) ([]string, error) {
	pools, err := d.cfg.State.Pools(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, o := range pools {
		if o.Subnet == p.Subnet && o.ID != p.ID {
			ids = append(ids, o.ID)
		}
	}
	return ids, nil
}

func (d *Driver) pool(ctx context.Context, id string) (state.Pool, error) {
	p, found, err := d.held(ctx, id)
	if err == nil && !found {
		err = fmt.Errorf("unknown pool ID %q: was the network created with --ipam-driver felt:latest on this host?", id)
	}
	return p, err
}

// withHeld runs f on the record of pool request id under the driver's
// lock; an ID of no pool felt holds is no error, and f does not run:
// Docker's releases of unknown things succeed.
func (d *Driver) withHeld(ctx context.Context, id string, f func(context.Context, state.Pool) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, found, err := d.held(ctx, id)
	if err != nil || !found {
		return err
	}
	return f(ctx, p)
}

// held reads the record of pool request id; an ID not in felt's canonical
// form names no pool of felt's (and two spellings must not reach the same
// record).
func (d *Driver) held(ctx context.Context, id string) (state.Pool, bool, error) {
	if !validPoolID(id) {
		return state.Pool{}, false, nil
	}
	return d.cfg.State.Pool(ctx, id)
}
