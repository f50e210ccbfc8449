package ipnet

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
)

// The index arithmetic agrees with listing every subnet, on random spaces
// and random taken prefixes of every length (inside, around and outside).
func TestFreeSubnetsMatchesListing(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 2000; round++ {
		space := netip.PrefixFrom(FromUint32(r.Uint32()), 16+r.IntN(9)).Masked()
		bits := space.Bits() + r.IntN(min(7, 33-space.Bits()))
		var taken []netip.Prefix
		for range r.IntN(8) {
			// Near the space, so that overlaps are common.
			a := FromUint32(ToUint32(space.Addr()) + uint32(r.IntN(int(Size(space))*2)) - uint32(Size(space)/2))
			taken = append(taken, netip.PrefixFrom(a, space.Bits()-2+r.IntN(34-space.Bits())).Masked())
		}
		f := NewFreeSubnets(space, bits, taken)
		var free []netip.Prefix
		for i := uint64(0); i < Subnets(space, bits); i++ {
			s := Subnet(space, bits, i)
			ok := true
			for _, tk := range taken {
				ok = ok && !tk.Overlaps(s)
			}
			if ok {
				free = append(free, s)
			}
			if f.IsFree(s) != ok {
				t.Fatalf("space %s /%d taken %v: IsFree(%s) = %v, want %v", space, bits, taken, s, !ok, ok)
			}
		}
		if f.Free() != uint64(len(free)) {
			t.Fatalf("space %s /%d taken %v: Free() = %d, want %d", space, bits, taken, f.Free(), len(free))
		}
		for try := 0; try < 4; try++ {
			from := r.Uint64N(Subnets(space, bits))
			var want netip.Prefix
			for _, c := range free {
				if Index(space, c.Addr())>>(32-bits) >= from {
					want = c
					break
				}
			}
			if !want.IsValid() && len(free) > 0 {
				want = free[0]
			}
			got, ok := f.NextFree(from)
			if got != want || ok != want.IsValid() {
				t.Fatalf("space %s /%d taken %v: NextFree(%d) = %s %v, want %s", space, bits, taken, from, got, ok, want)
			}
		}
		for k, want := range free {
			if got := f.NthFree(uint64(k)); got != want {
				t.Fatalf("space %s /%d taken %v: NthFree(%d) = %s, want %s", space, bits, taken, k, got, want)
			}
		}
	}
}

// The whole IPv4 space in /30s (a billion subnets): counting and choosing
// allocate in proportion to the taken prefixes only.
func TestFreeSubnetsMemoryIndependentOfSpace(t *testing.T) {
	all := netip.MustParsePrefix("0.0.0.0/0")
	taken := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.2.4/30"), netip.MustParsePrefix("255.255.255.252/30")}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f := NewFreeSubnets(all, 30, taken)
	last := f.NthFree(f.Free() - 1)
	first := f.NthFree(0)
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("allocated %d bytes for a space of %d subnets", got, f.Total())
	}
	if f.Total() != 1<<30 || f.Free() != 1<<30-1<<22-1 {
		t.Fatalf("Total %d Free %d", f.Total(), f.Free())
	}
	if first.String() != "0.0.0.0/30" || last.String() != "255.255.255.248/30" {
		t.Fatalf("first %s last %s", first, last)
	}
}
