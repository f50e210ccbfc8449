package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// Docker option keys the IPAM driver reads.
const (
	optRequestType = "RequestAddressType"
	gatewayType    = "com.docker.network.gateway"
	optMAC         = "com.docker.network.endpoint.macaddress"
	optEndpoint    = "com.docker.network.endpoint.name"
)

// Address spaces felt reports; Docker passes them back in RequestPool and
// felt ignores them (pools are global by construction).
const (
	LocalAddressSpace  = "FeltLocal"
	GlobalAddressSpace = "FeltGlobal"
)

// Config holds what the IPAM driver depends on.
type Config struct {
	State    *state.Store
	Registry *lease.Registry
	// Owner describes this host in the leases it takes for pool.
	Owner func(ctx context.Context, pool netip.Prefix) (lease.Owner, error)
	// HostID is this host's ID, the one Owner puts in leases: releasing a
	// lease needs only it, so a release works when Owner cannot tell the
	// public IP. Empty: taken from Owner.
	HostID string
	// TTL of the leases this host takes; 0 means permanent.
	TTL time.Duration
	// HasNetwork reports whether a felt network on this host uses pool: the
	// IPAM only serves felt networks, and says so to a user who paired it
	// with another network driver.
	HasNetwork func(ctx context.Context, pool netip.Prefix) (bool, error)
	// HostNetworks lists the networks of the host's interfaces; a pool
	// overlapping one is refused. Nil: no such check (unit tests).
	HostNetworks func(ctx context.Context) ([]HostNetwork, error)
	// ForgetHost removes what an earlier felt of this host, named by its
	// host ID, left in the kernel (forget.go). Nil: nothing is removed.
	ForgetHost func(ctx context.Context, hostID string) error
	Log        *slog.Logger
}

// Driver is the IPAM side of felt. Calls are serialised: Docker sends few of
// them, and one lock keeps pool reference counts and allocations simple.
type Driver struct {
	cfg     Config
	mu      sync.Mutex
	earlier earlierHosts // taken-over leases' host IDs (forget.go)
}

// New returns an IPAM driver.
func New(cfg Config) *Driver {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Driver{cfg: cfg}
}

// GetCapabilities is static. RequiresMACAddress makes Docker put the MAC in
// endpoint address requests, which is how felt tells them from aux-address
// reservations. Replay is not required: felt persists its allocations.
func (d *Driver) GetCapabilities() *Capabilities {
	return &Capabilities{RequiresMACAddress: true, RequiresRequestReplay: false}
}

// Capabilities adds the field go-plugins-helpers lacks.
type Capabilities struct {
	RequiresMACAddress    bool
	RequiresRequestReplay bool
}

// GetDefaultAddressSpaces names felt's address spaces.
func (d *Driver) GetDefaultAddressSpaces() *api.AddressSpacesResponse {
	return &api.AddressSpacesResponse{LocalDefaultAddressSpace: LocalAddressSpace, GlobalDefaultAddressSpace: GlobalAddressSpace}
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
	id := PoolID(pool, rng)
	var p Pool
	found, err := d.cfg.State.Get(ctx, poolKey(id), &p)
	if err != nil {
		return nil, err
	}
	if found {
		if subnetLen != 0 && p.Subnet.Bits() != subnetLen {
			return nil, fmt.Errorf("pool %s is in use on this host with subnet_len=%d; asked for subnet_len=%d", pool, p.Subnet.Bits(), subnetLen)
		}
		p.Refs++
		if err := d.cfg.State.Put(ctx, poolKey(id), p); err != nil {
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
		nets, err := d.cfg.HostNetworks(ctx)
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
	var prefer netip.Prefix
	if _, err := d.cfg.State.Get(ctx, lastSubnetKey(pool), &prefer); err != nil {
		return nil, err
	}
	_, err = d.cfg.Registry.GetNetwork(ctx, pool)
	recordExisted := err == nil
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return nil, fmt.Errorf("network %s: %w", pool, err)
	}

	// Checks done; writes from here on.
	n, err := d.cfg.Registry.EnsureNetwork(ctx, lease.Spec{Pool: pool, SubnetLen: subnetLen}, false)
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
	p = Pool{ID: id, Pool: pool, Range: rng, Subnet: l.Subnet, Gateway: ipnet.Nth(l.Subnet, 1), Refs: 1}
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
func (d *Driver) saveNewPool(ctx context.Context, p Pool) error {
	err := newAllocator(d.cfg.State, p).ensure(ctx, p.Gateway, KindGateway)
	if err == nil {
		err = d.cfg.State.Put(ctx, poolKey(p.ID), p)
	}
	if err == nil {
		err = d.cfg.State.Put(ctx, lastSubnetKey(p.Pool), p.Subnet)
	}
	if err != nil {
		_ = d.cfg.State.Delete(ctx, poolKey(p.ID))
		if others, _ := d.subnetHolders(ctx, p); len(others) == 0 {
			_ = newAllocator(d.cfg.State, p).releaseAll(ctx)
		}
	}
	return err
}

func (d *Driver) logTakeover(old lease.Lease, action string) {
	d.earlier.note(old.HostID)
	d.cfg.Log.Warn("lease of this host's public IP held by another host ID "+action+
		": an earlier felt on this host whose state was lost (if another host really uses this address, give each host its own FELT_PUBLIC_IP)",
		"subnet", old.Subnet, "hostID", old.HostID, "publicIP", old.PublicIP)
}

func poolResponse(p Pool) *api.RequestPoolResponse {
	return &api.RequestPoolResponse{
		PoolID: p.ID,
		Pool:   p.Subnet.String(),
		Data:   map[string]string{gatewayType: netip.PrefixFrom(p.Gateway, p.Subnet.Bits()).String()},
	}
}

// checkLocalOverlap refuses a pool that overlaps another pool held on this
// host: two bridges with overlapping subnets would make routing ambiguous.
func (d *Driver) checkLocalOverlap(ctx context.Context, pool netip.Prefix) error {
	pools, err := state.List[Pool](ctx, d.cfg.State, PoolsPrefix)
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
	d.mu.Lock()
	defer d.mu.Unlock()
	p, found, err := d.held(ctx, req.PoolID)
	if err != nil || !found {
		return err // unknown: not a pool felt holds
	}
	if p.Refs > 1 {
		p.Refs--
		return d.cfg.State.Put(ctx, poolKey(req.PoolID), p)
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
		if err := d.cfg.State.Delete(ctx, poolKey(req.PoolID)); err != nil {
			return err
		}
		d.cfg.Log.Info("pool released; its subnet stays with the other pool requests sharing it", "pool", p.ID, "subnet", p.Subnet, "sharedWith", others)
		return nil
	}
	if err := alloc.releaseAll(ctx); err != nil {
		return err
	}
	if err := d.cfg.State.Delete(ctx, poolKey(req.PoolID)); err != nil {
		return err
	}
	d.cfg.Log.Info("pool released", "pool", p.Pool, "subnet", p.Subnet)
	// The pool is gone locally whatever happens next. If the store is
	// unreachable the lease is simply not renewed and expires.
	d.releaseLease(ctx, p, "could not release lease; it will expire")
	return nil
}

// releaseLease gives this host's lease of p's subnet back; a failure is
// only logged (as what), since the lease then expires by itself.
func (d *Driver) releaseLease(ctx context.Context, p Pool, what string) {
	hostID, err := d.hostID(ctx, p.Pool)
	if err == nil {
		err = d.cfg.Registry.Release(ctx, p.Pool, p.Subnet, hostID)
	}
	if err != nil {
		d.cfg.Log.Warn(what, "subnet", p.Subnet, "err", err)
	}
}

// hostID is the ID this host's leases carry.
func (d *Driver) hostID(ctx context.Context, pool netip.Prefix) (string, error) {
	if d.cfg.HostID != "" {
		return d.cfg.HostID, nil
	}
	owner, err := d.cfg.Owner(ctx, pool)
	return owner.HostID, err
}

// subnetHolders lists the other pool requests holding p's subnet.
func (d *Driver) subnetHolders(ctx context.Context, p Pool) ([]string, error) {
	pools, err := state.List[Pool](ctx, d.cfg.State, PoolsPrefix)
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

// RequestAddress allocates from this host's subnet: the asked address if it
// is free and inside the subnet, else the next free one.
func (d *Driver) RequestAddress(ctx context.Context, req *api.RequestAddressRequest) (*api.RequestAddressResponse, error) {
	if req == nil {
		return nil, errors.New("empty RequestAddress request")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.pool(ctx, req.PoolID)
	if err != nil {
		return nil, err
	}
	alloc := newAllocator(d.cfg.State, p)
	isGateway := req.Options[optRequestType] == gatewayType
	_, hasMAC := req.Options[optMAC]
	_, hasName := req.Options[optEndpoint]
	if (hasMAC || hasName) && d.cfg.HasNetwork != nil {
		ok, err := d.cfg.HasNetwork(ctx, p.Pool)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("felt's IPAM serves only felt networks: pool %s has no felt network on this host; create the network with both -d felt:latest and --ipam-driver felt:latest", p.Pool)
		}
	}
	var addr netip.Addr
	switch {
	case req.Address == "" && isGateway:
		addr = p.Gateway
		if err := alloc.ensure(ctx, addr, KindGateway); err != nil {
			return nil, err
		}
	case req.Address == "":
		if addr, err = alloc.next(ctx); err != nil {
			return nil, fmt.Errorf("pool %s: %w", p.Pool, err)
		}
	default:
		if addr, err = netip.ParseAddr(req.Address); err != nil || !addr.Is4() {
			return nil, fmt.Errorf("address %q is not an IPv4 address", req.Address)
		}
		if !p.Subnet.Contains(addr) {
			return nil, fmt.Errorf("address %s is outside this host's subnet %s of pool %s: felt gives each host its own subnet, so --ip (and --gateway, --aux-address) must be inside %s", addr, p.Subnet, p.Pool, p.Subnet)
		}
		kind := KindContainer
		switch {
		case isGateway:
			kind = KindGateway
		case !hasMAC && !hasName:
			kind = KindAux
		}
		if isGateway && addr == p.Gateway {
			err = alloc.ensure(ctx, addr, kind)
		} else {
			err = alloc.reserve(ctx, addr, kind)
		}
		if err != nil {
			return nil, fmt.Errorf("pool %s: %w", p.Pool, err)
		}
	}
	d.cfg.Log.Debug("address allocated", "pool", p.Pool, "addr", addr)
	return &api.RequestAddressResponse{Address: netip.PrefixFrom(addr, p.Subnet.Bits()).String()}, nil
}

// ReleaseAddress frees an address; unknown pools and addresses are fine.
func (d *Driver) ReleaseAddress(ctx context.Context, req *api.ReleaseAddressRequest) error {
	if req == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, found, err := d.held(ctx, req.PoolID)
	if err != nil || !found {
		return err
	}
	addr, err := netip.ParseAddr(req.Address)
	if err != nil {
		if pfx, perr := netip.ParsePrefix(req.Address); perr == nil {
			addr = pfx.Addr()
		} else {
			return fmt.Errorf("address %q is not an IP address", req.Address)
		}
	}
	if addr == p.Gateway {
		return nil // the bridge holds it for as long as the pool lives
	}
	other, err := newAllocator(d.cfg.State, p).release(ctx, addr)
	if other != "" {
		d.cfg.Log.Warn("address not released: another pool request sharing the subnet holds it", "addr", addr, "pool", req.PoolID, "holder", other)
	}
	return err
}

func (d *Driver) pool(ctx context.Context, id string) (Pool, error) {
	p, found, err := d.held(ctx, id)
	if err == nil && !found {
		err = fmt.Errorf("unknown pool ID %q: was the network created with --ipam-driver felt:latest on this host?", id)
	}
	return p, err
}

// held reads the record of pool request id; an ID not in felt's canonical
// form names no pool of felt's (and two spellings must not reach the same
// record).
func (d *Driver) held(ctx context.Context, id string) (Pool, bool, error) {
	var p Pool
	if !validPoolID(id) {
		return p, false, nil
	}
	found, err := d.cfg.State.Get(ctx, poolKey(id), &p)
	return p, found, err
}

// Pools lists this host's pools (for the driver and inspection).
func (d *Driver) Pools(ctx context.Context) ([]Pool, error) {
	return state.List[Pool](ctx, d.cfg.State, PoolsPrefix)
}

// Renew extends the lease of every pool this host holds, re-acquiring one
// that vanished (it expired while the host was down or cut off). It returns
// the first error, after trying all.
func (d *Driver) Renew(ctx context.Context) error {
	d.mu.Lock()
	pools, err := d.Pools(ctx)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	var first error
	for _, p := range pools {
		if err := d.renewHeld(ctx, p); err != nil {
			d.cfg.Log.Warn("lease renewal failed", "subnet", p.Subnet, "err", err)
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// renewHeld renews the lease of pool request p, then makes sure this host
// still holds that subnet: a ReleasePool during the renewal (docker network
// rm) released the lease, and the renewal, which read the pool before,
// leased the subnet again (and remade the network record) for a pool
// nothing here holds any more; that lease is released again. The lock is
// not held during the renewal itself: with the store unreachable it waits
// up to the store's timeout, and address requests, which need only the
// local state, must not wait with it.
func (d *Driver) renewHeld(ctx context.Context, p Pool) error {
	err := d.renewPool(ctx, p)
	d.mu.Lock()
	defer d.mu.Unlock()
	pools, lerr := d.Pools(ctx)
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	for _, o := range pools {
		if o.Pool == p.Pool && o.Subnet == p.Subnet {
			return err // still held
		}
	}
	d.releaseLease(ctx, p, "could not release the lease of a pool released during its renewal; it will expire")
	return nil
}

func (d *Driver) renewPool(ctx context.Context, p Pool) error {
	owner, err := d.cfg.Owner(ctx, p.Pool)
	if err != nil {
		return err
	}
	n, err := d.cfg.Registry.EnsureNetwork(ctx, lease.Spec{Pool: p.Pool, SubnetLen: p.Subnet.Bits()}, false)
	if err != nil {
		return err
	}
	// As Registry.Renew, with takeovers logged.
	l, err := d.cfg.Registry.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner, TTL: d.cfg.TTL,
		Prefer: p.Subnet, Within: p.Subnet, OnTakeover: d.logTakeover})
	if err != nil {
		return err
	}
	if l.Subnet != p.Subnet {
		// Cannot happen with Within set to the subnet; guard anyway, since
		// containers would be stranded on a subnet the host no longer owns.
		return fmt.Errorf("lease %s: renewed as %s", p.Subnet, l.Subnet)
	}
	return nil
}

// LeasesMissing reports whether a lease this host holds has vanished from
// the store (Consul lost or replaced its data, or a peer removed it as
// expired while this host was cut off): it is then renewed at once rather
// than at the next scheduled renewal, since peers drop routes to it.
func (d *Driver) LeasesMissing(ctx context.Context) (bool, error) {
	pools, err := d.Pools(ctx)
	if err != nil {
		return false, err
	}
	for _, p := range pools {
		hostID, err := d.hostID(ctx, p.Pool)
		if err != nil {
			return false, err
		}
		ls, err := d.cfg.Registry.Leases(ctx, p.Pool)
		if err != nil {
			return false, err
		}
		found := false
		for _, l := range ls {
			found = found || (l.Subnet == p.Subnet && l.HostID == hostID)
		}
		if !found {
			return true, nil
		}
	}
	return false, nil
}
