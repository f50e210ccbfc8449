package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/state"
)

// Address kinds, recorded with each allocation so a reader of the state (and
// felt's inspection commands) can tell a gateway from a container.
const (
	KindGateway   = "gateway"
	KindAux       = "aux"
	KindContainer = "container"
)

// Address is one allocated address of a host subnet.
type Address struct {
	Addr netip.Addr `json:"addr"`
	Kind string     `json:"kind"`
}

func addrsPrefix(subnet netip.Prefix) string {
	return state.Key("addrs", ipnet.Key(subnet)) + "/"
}

func addrKey(subnet netip.Prefix, a netip.Addr) string { return addrsPrefix(subnet) + a.String() }

func cursorKey(subnet netip.Prefix) string { return state.Key("cursor", ipnet.Key(subnet)) }

// allocator hands out addresses of one host subnet, persisted in the state
// store. Callers serialise access (the Driver's mutex).
type allocator struct {
	st     *state.Store
	subnet netip.Prefix
	rng    netip.Prefix // where dynamic addresses come from; the subnet if no --ip-range
}

func newAllocator(st *state.Store, p Pool) allocator {
	rng := p.Subnet
	if p.Range.IsValid() && p.Range.Bits() > p.Subnet.Bits() && p.Subnet.Contains(p.Range.Addr()) {
		rng = p.Range
	}
	return allocator{st: st, subnet: p.Subnet, rng: rng}
}

// usable reports whether a can be given to anything: inside the subnet and
// neither its network nor its broadcast address.
func (a allocator) usable(addr netip.Addr) bool {
	return a.subnet.Contains(addr) && addr != a.subnet.Addr() && addr != ipnet.Last(a.subnet)
}

// reserve records addr; it fails if addr is taken or unusable.
func (a allocator) reserve(ctx context.Context, addr netip.Addr, kind string) error {
	if !a.usable(addr) {
		return fmt.Errorf("address %s is the network or broadcast address of %s", addr, a.subnet)
	}
	ok, err := a.st.Create(ctx, addrKey(a.subnet, addr), Address{Addr: addr, Kind: kind})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("address %s is already in use", addr)
	}
	return nil
}

// ensure records addr as kind unless it is recorded already (idempotent).
func (a allocator) ensure(ctx context.Context, addr netip.Addr, kind string) error {
	if _, err := a.st.Create(ctx, addrKey(a.subnet, addr), Address{Addr: addr, Kind: kind}); err != nil {
		return err
	}
	return nil
}

// next allocates the first free address after the last one handed out,
// wrapping around: like Docker's own IPAM, a just-released address is not
// reused at once, so stale ARP entries of peers do not misdirect traffic.
func (a allocator) next(ctx context.Context) (netip.Addr, error) {
	used, err := a.used(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	var last netip.Addr
	if _, err := a.st.Get(ctx, cursorKey(a.subnet), &last); err != nil {
		return netip.Addr{}, err
	}
	size := ipnet.Size(a.rng)
	start := uint64(0)
	if last.IsValid() && a.rng.Contains(last) {
		start = ipnet.Index(a.rng, last) + 1
	}
	for i := uint64(0); i < size; i++ {
		cand := ipnet.Nth(a.rng, (start+i)%size)
		if !a.usable(cand) || used[cand] {
			continue
		}
		if err := a.reserve(ctx, cand, KindContainer); err != nil {
			return netip.Addr{}, err
		}
		if err := a.st.Put(ctx, cursorKey(a.subnet), cand); err != nil {
			return netip.Addr{}, err
		}
		return cand, nil
	}
	where := a.subnet.String()
	if a.rng != a.subnet {
		where = "--ip-range " + a.rng.String() + " of " + where
	}
	return netip.Addr{}, fmt.Errorf("no free address left in %s (this host's subnet): %d addresses in use", where, len(used))
}

func (a allocator) used(ctx context.Context) (map[netip.Addr]bool, error) {
	keys, err := a.st.Keys(ctx, addrsPrefix(a.subnet))
	if err != nil {
		return nil, err
	}
	used := make(map[netip.Addr]bool, len(keys))
	for _, k := range keys {
		if addr, err := netip.ParseAddr(strings.TrimPrefix(k, addrsPrefix(a.subnet))); err == nil {
			used[addr] = true
		}
	}
	return used, nil
}

func (a allocator) release(ctx context.Context, addr netip.Addr) error {
	return a.st.Delete(ctx, addrKey(a.subnet, addr))
}

// releaseAll forgets every allocation of the subnet (the pool is gone).
func (a allocator) releaseAll(ctx context.Context) error {
	keys, err := a.st.Keys(ctx, addrsPrefix(a.subnet))
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := a.st.Delete(ctx, k); err != nil {
			return err
		}
	}
	return a.st.Delete(ctx, cursorKey(a.subnet))
}
