package cluster

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/felt-net/felt/lease"
)

func TestSameDriverOptions(t *testing.T) {
	for _, c := range []struct {
		a, b map[string]string
		same bool
	}{
		{nil, map[string]string{}, true},
		{map[string]string{"vni": "07"}, map[string]string{"vni": "7"}, true},
		{map[string]string{"vni": "+7"}, map[string]string{"vni": "7"}, true},
		{map[string]string{"vni": "7"}, map[string]string{"vni": "8"}, false},
		{map[string]string{"port": "051820"}, map[string]string{"port": "51820"}, true},
		{map[string]string{"com.docker.network.driver.mtu": "01400"}, map[string]string{"com.docker.network.driver.mtu": "1400"}, true},
		{map[string]string{"directrouting": "1"}, map[string]string{"directrouting": "true"}, true},
		{map[string]string{"directrouting": "FALSE"}, map[string]string{"directrouting": "true"}, false},
		{map[string]string{"scope": "cluster"}, nil, true},
		{map[string]string{"scope": "local"}, nil, false},
		{map[string]string{"backend": "vxlan"}, map[string]string{"backend": "VXLAN"}, false}, // as given: felt refuses VXLAN
		{map[string]string{"vni": "x"}, map[string]string{"vni": "x"}, true},
		{map[string]string{"vni": "x"}, map[string]string{"vni": "y"}, false},
		{map[string]string{"vni": "7"}, map[string]string{"vni": "7", "port": "1"}, false},
	} {
		if got := sameDriverOptions(c.a, c.b); got != c.same {
			t.Errorf("sameDriverOptions(%v, %v) = %t, want %t", c.a, c.b, got, c.same)
		}
	}
	m := map[string]string{"vni": "07", "scope": "cluster"}
	canonicalOptions(m)
	if m["vni"] != "07" || m["scope"] != "cluster" {
		t.Errorf("canonicalOptions changed its argument: %v", m)
	}
}

// A host's `-o vni=07` is the declared vni=7: adopted, not a conflict.
func TestDiffersComparesOptionsByMeaning(t *testing.T) {
	d := &lease.Declaration{Name: "blue", DriverOpts: map[string]string{"vni": "7", "directrouting": "true"}}
	n := Net{Name: "blue", DriverOpts: map[string]string{"vni": "07", "directrouting": "1", "scope": "cluster"}}
	if why := differs(d, n, netip.Prefix{}); why != "" {
		t.Errorf("differs = %q, want the same network", why)
	}
	n.DriverOpts["vni"] = "8"
	if why := differs(d, n, netip.Prefix{}); !strings.Contains(why, "options") {
		t.Errorf("differs = %q, want it to name the options", why)
	}
}
