package ipnet

import (
	"net/netip"
	"testing"
)

func TestSubnetsOutsideRange(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/16")
	for _, bits := range []int{8, 33, -1} {
		if got := Subnets(p, bits); got != 0 {
			t.Errorf("Subnets(%s, %d) = %d, want 0 (no subnet of that length)", p, bits, got)
		}
	}
	if got := Subnets(netip.MustParsePrefix("0.0.0.0/0"), 32); got != 1<<32 {
		t.Errorf("Subnets(0.0.0.0/0, 32) = %d", got)
	}
}

// A length shorter than the space's has no subnets, so none free, whatever
// is taken (Free subtracted the taken from zero and wrapped around).
func TestFreeSubnetsLengthOutsideSpace(t *testing.T) {
	f := NewFreeSubnets(netip.MustParsePrefix("10.0.0.0/16"), 8, []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")})
	if f.Total() != 0 || f.Free() != 0 {
		t.Fatalf("Total %d Free %d, want 0 0", f.Total(), f.Free())
	}
}
