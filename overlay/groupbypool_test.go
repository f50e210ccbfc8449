package overlay

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/felt-net/felt/lease"
)

// groupByPool keeps each pool's leases in order, also when a pool's run is
// split, and changes nothing of its input.
func TestGroupByPool(t *testing.T) {
	p1, p2 := netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.2.0.0/16")
	l := func(p netip.Prefix, s string) lease.Lease {
		return lease.Lease{Pool: p, Subnet: netip.MustParsePrefix(s)}
	}
	in := []lease.Lease{l(p1, "10.1.1.0/24"), l(p1, "10.1.2.0/24"), l(p2, "10.2.1.0/24"), l(p1, "10.1.3.0/24")}
	orig := slices.Clone(in)
	got := groupByPool(in)
	want1 := []lease.Lease{orig[0], orig[1], orig[3]}
	if !slices.EqualFunc(got[p1], want1, func(a, b lease.Lease) bool { return a.Subnet == b.Subnet }) || len(got[p2]) != 1 || got[p2][0].Subnet != orig[2].Subnet {
		t.Fatalf("groupByPool = %v", got)
	}
	if !slices.EqualFunc(in, orig, func(a, b lease.Lease) bool { return a.Subnet == b.Subnet && a.Pool == b.Pool }) {
		t.Fatalf("groupByPool changed its input: %v", in)
	}
	if len(groupByPool(nil)) != 0 {
		t.Fatal("groupByPool(nil) is not empty")
	}
}
