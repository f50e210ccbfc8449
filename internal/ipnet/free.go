package ipnet

import (
	"net/netip"
	"slices"
)

// Subnets of a space are numbered 0 … Total()-1 (Subnet(space, bits, i)).
// A pool may hold billions of them (a /1 split into /30s), so the free ones
// are never listed: the taken ones are kept as sorted, merged ranges of
// indexes, and the k-th free subnet is found by skipping over those ranges.
// Memory and time are proportional to the number of taken subnets, whatever
// the size of the space.

// span is an inclusive range of subnet indexes.
type span struct{ lo, hi uint64 }

// FreeSubnets answers which subnets of length bits inside a space are free,
// given the prefixes already taken (of any length: a taken prefix takes
// every subnet it overlaps).
type FreeSubnets struct {
	space netip.Prefix
	bits  int
	taken []span // sorted by lo, disjoint
}

// NewFreeSubnets indexes taken against the subnets of length bits of space.
// Prefixes outside space are ignored. bits must be between space.Bits() and 32.
func NewFreeSubnets(space netip.Prefix, bits int, taken []netip.Prefix) FreeSubnets {
	f := FreeSubnets{space: space, bits: bits}
	base := uint64(ToUint32(space.Addr()))
	end := base + Size(space) - 1
	shift := uint(32 - bits)
	spans := make([]span, 0, len(taken))
	for _, t := range taken {
		if !t.IsValid() || !t.Addr().Is4() || !t.Overlaps(space) {
			continue
		}
		t = t.Masked()
		lo := max(uint64(ToUint32(t.Addr())), base)
		hi := min(uint64(ToUint32(t.Addr()))+Size(t)-1, end)
		spans = append(spans, span{(lo - base) >> shift, (hi - base) >> shift})
	}
	slices.SortFunc(spans, func(a, b span) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	for _, s := range spans {
		if n := len(f.taken); n > 0 && s.lo <= f.taken[n-1].hi+1 {
			f.taken[n-1].hi = max(f.taken[n-1].hi, s.hi)
			continue
		}
		f.taken = append(f.taken, s)
	}
	return f
}

// Total is the number of subnets in the space, free or not.
func (f FreeSubnets) Total() uint64 { return Subnets(f.space, f.bits) }

// Free is the number of subnets no taken prefix overlaps.
func (f FreeSubnets) Free() uint64 {
	used := uint64(0)
	for _, s := range f.taken {
		used += s.hi - s.lo + 1
	}
	return f.Total() - min(used, f.Total()) // no subnets at all for a bits outside the space's range
}

// IsFree reports whether sub is one of the space's subnets and overlaps no
// taken prefix.
func (f FreeSubnets) IsFree(sub netip.Prefix) bool {
	if !sub.IsValid() || sub.Bits() != f.bits || sub.Masked() != sub || !f.space.Contains(sub.Addr()) {
		return false
	}
	i := Index(f.space, sub.Addr()) >> uint(32-f.bits)
	for _, s := range f.taken {
		if s.lo <= i && i <= s.hi {
			return false
		}
	}
	return true
}

// NthFree returns the k-th free subnet (0-based, in address order); k must
// be below Free().
func (f FreeSubnets) NthFree(k uint64) netip.Prefix {
	i := k
	for _, s := range f.taken {
		if s.lo > i {
			break
		}
		i += s.hi - s.lo + 1
	}
	return Subnet(f.space, f.bits, i)
}

// NextFree returns the first free subnet at index from or after it,
// wrapping around to the start of the space; false if none is free.
func (f FreeSubnets) NextFree(from uint64) (netip.Prefix, bool) {
	total := f.Total()
	if from >= total {
		from = 0
	}
	if i, ok := f.firstFree(from, total); ok {
		return Subnet(f.space, f.bits, i), true
	}
	if i, ok := f.firstFree(0, from); ok {
		return Subnet(f.space, f.bits, i), true
	}
	return netip.Prefix{}, false
}

// firstFree is the lowest free index in [from, to).
func (f FreeSubnets) firstFree(from, to uint64) (uint64, bool) {
	i := from
	for _, s := range f.taken {
		if s.hi < i {
			continue
		}
		if s.lo > i {
			break
		}
		i = s.hi + 1
	}
	return i, i < to
}
