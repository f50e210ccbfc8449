package ipam

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/state"
)

// allocator hands out addresses of one host subnet, persisted in the state
// store, on behalf of one pool request. Callers serialise access (the
// Driver's mutex).
type allocator struct {
	st     *state.Store
	poolID string
	subnet netip.Prefix
	rng    netip.Prefix // where dynamic addresses come from; the subnet if no --ip-range
}

func newAllocator(st *state.Store, p state.Pool) allocator {
	rng := p.Subnet
	if p.Range.IsValid() && p.Range.Bits() > p.Subnet.Bits() && p.Subnet.Contains(p.Range.Addr()) {
		rng = p.Range
	}
	return allocator{st: st, poolID: p.ID, subnet: p.Subnet, rng: rng}
}

// usable reports whether a can be given to anything: inside the subnet and
// neither its network nor its broadcast address.
func (a allocator) usable(addr netip.Addr) bool {
	return a.subnet.Contains(addr) && addr != a.subnet.Addr() && addr != ipnet.Last(a.subnet)
}

func (a allocator) record(addr netip.Addr, kind string) state.Address {
	return state.Address{Addr: addr, Kind: kind, PoolID: a.poolID}
}

// reserve records addr; it fails if addr is taken or unusable.
func (a allocator) reserve(ctx context.Context, addr netip.Addr, kind string) error {
	if !a.usable(addr) {
		return fmt.Errorf("address %s is the network or broadcast address of %s", addr, a.subnet)
	}
	ok, err := a.st.CreateAddress(ctx, a.subnet, a.record(addr, kind))
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
	if _, err := a.st.CreateAddress(ctx, a.subnet, a.record(addr, kind)); err != nil {
		return err
	}
	return nil
}

// next allocates the first free address after the last one handed out,
// wrapping around: like Docker's own IPAM, a just-released address is not
// reused at once, so stale ARP entries of peers do not misdirect traffic.
// The search skips over the allocated addresses (as /32s) by index
// arithmetic: memory and time grow with the addresses in use, not with the
// size of the subnet (up to a /8).
func (a allocator) next(ctx context.Context) (netip.Addr, error) {
	used, err := a.used(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	last, err := a.st.Cursor(ctx, a.subnet)
	if err != nil {
		return netip.Addr{}, err
	}
	start := uint64(0)
	if last.IsValid() && last.Is4() && a.rng.Contains(last) {
		start = ipnet.Index(a.rng, last) + 1
	}
	taken := append(used, netip.PrefixFrom(a.subnet.Addr(), 32), netip.PrefixFrom(ipnet.Last(a.subnet), 32))
	free := ipnet.NewFreeSubnets(a.rng, 32, taken)
	if cand, ok := free.NextFree(start); ok {
		addr := cand.Addr()
		if err := a.reserve(ctx, addr, state.KindContainer); err != nil {
			return netip.Addr{}, err
		}
		if err := a.st.PutCursor(ctx, a.subnet, addr); err != nil {
			return netip.Addr{}, err
		}
		return addr, nil
	}
	where := a.subnet.String()
	if a.rng != a.subnet {
		where = "--ip-range " + a.rng.String() + " of " + where
	}
	return netip.Addr{}, fmt.Errorf("no free address left in %s (this host's subnet): %d addresses in use", where, len(used))
}

// used lists the allocated addresses of the subnet, as /32s.
func (a allocator) used(ctx context.Context) ([]netip.Prefix, error) {
	addrs, err := a.st.UsedAddrs(ctx, a.subnet)
	if err != nil {
		return nil, err
	}
	used := make([]netip.Prefix, 0, len(addrs)+2)
	for _, addr := range addrs {
		if addr.Is4() {
			used = append(used, netip.PrefixFrom(addr, 32))
		}
	}
	return used, nil
}

// release frees addr if this pool request holds it (or it predates owners).
// It reports whether the address belongs to another pool request sharing
// the subnet, which keeps it.
func (a allocator) release(ctx context.Context, addr netip.Addr) (foreign string, err error) {
	rec, found, err := a.st.Address(ctx, a.subnet, addr)
	if err != nil || !found {
		return "", err
	}
	if rec.PoolID != "" && rec.PoolID != a.poolID {
		return rec.PoolID, nil
	}
	return "", a.st.DeleteAddress(ctx, a.subnet, addr)
}

// releaseOwn frees every address this pool request allocated, the gateway
// excepted: another pool request shares the subnet and keeps the bridge.
func (a allocator) releaseOwn(ctx context.Context) error {
	addrs, err := a.st.Addresses(ctx, a.subnet)
	if err != nil {
		return err
	}
	for _, r := range addrs {
		if r.PoolID == a.poolID && r.Kind != state.KindGateway && r.Addr.IsValid() {
			if err := a.st.DeleteAddress(ctx, a.subnet, r.Addr); err != nil {
				return err
			}
		}
	}
	return nil
}

// releaseAll forgets every allocation of the subnet: the last pool request
// holding it is gone.
func (a allocator) releaseAll(ctx context.Context) error {
	return a.st.DeleteAddresses(ctx, a.subnet)
}
