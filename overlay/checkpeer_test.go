package overlay_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// A lease's public IP must be one a peer host can have: unicast IPv4
// outside the network's pool. Private and link-local unicast addresses are
// fine (test setups and LANs use them). A refused public IP is a
// *PublicIPError; a bad subnet is reported first, as another error.
func TestCheckPeerPublicIP(t *testing.T) {
	n := overlay.Network{ID: "n", Pool: netip.MustParsePrefix("10.42.0.0/16"), Subnet: netip.MustParsePrefix("10.42.1.0/24")}
	for _, c := range []struct {
		ip  string // "" for none
		why string // "" when accepted
	}{
		{"192.168.77.2", ""},
		{"10.1.2.3", ""},
		{"172.16.0.1", ""},
		{"169.254.10.1", ""}, // link-local unicast
		{"203.0.113.9", ""},
		{"8.8.8.8", ""},
		{"240.0.0.1", ""}, // routed as unicast by Linux
		{"", "not an IPv4 address"},
		{"2001:db8::2", "not an IPv4 address"},
		{"::ffff:192.168.77.2", "not an IPv4 address"},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "unspecified"},
		{"127.0.0.1", "loopback"},
		{"127.8.9.10", "loopback"},
		{"224.0.0.1", "multicast"}, // link-local multicast
		{"224.0.0.251", "multicast"},
		{"239.1.2.3", "multicast"},
		{"255.255.255.255", "broadcast"},
		{"10.42.7.1", "pool"},
		{"10.42.1.5", "pool"},
	} {
		l := lease.Lease{HostID: "host-b", Subnet: netip.MustParsePrefix("10.42.2.0/24")}
		if c.ip != "" {
			l.PublicIP = netip.MustParseAddr(c.ip)
		}
		err := overlay.CheckPeer(n, l)
		var pe *overlay.PublicIPError
		switch {
		case c.why == "" && err != nil:
			t.Errorf("%q: %v, want accepted", c.ip, err)
		case c.why == "":
		case !errors.As(err, &pe):
			t.Errorf("%q: %v, want a *PublicIPError", c.ip, err)
		case !strings.Contains(err.Error(), c.why) || !strings.Contains(err.Error(), "host-b") || pe.Subnet != l.Subnet:
			t.Errorf("%q: %v, want it to name host-b, its subnet and %q", c.ip, err, c.why)
		}
	}
	// A subnet that must not be programmed is the error, whatever the IP.
	bad := lease.Lease{HostID: "host-x", Subnet: netip.MustParsePrefix("10.99.0.0/24"), PublicIP: netip.MustParseAddr("127.0.0.1")}
	var pe *overlay.PublicIPError
	if err := overlay.CheckPeer(n, bad); err == nil || errors.As(err, &pe) || !strings.Contains(err.Error(), "outside pool") {
		t.Errorf("subnet outside the pool: %v", err)
	}
}
