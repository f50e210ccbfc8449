package ipnet

import (
	"math"
	"net/netip"
	"strings"
	"testing"
)

func TestUint32RoundTrip(t *testing.T) {
	for _, c := range []struct {
		addr string
		v    uint32
	}{
		{"0.0.0.0", 0},
		{"0.0.0.1", 1},
		{"10.42.0.1", 0x0a2a0001},
		{"128.0.0.0", 1 << 31},
		{"255.255.255.255", math.MaxUint32},
	} {
		a := netip.MustParseAddr(c.addr)
		if got := ToUint32(a); got != c.v {
			t.Errorf("ToUint32(%s) = %#x, want %#x", a, got, c.v)
		}
		if got := FromUint32(c.v); got != a {
			t.Errorf("FromUint32(%#x) = %s, want %s", c.v, got, a)
		}
	}
}

// Size, Nth, Index and Last at both ends of the range of lengths: /0 holds
// 2^32 addresses (more than a uint32 counts), /32 one.
func TestAddressesOfPrefix(t *testing.T) {
	for _, c := range []struct {
		prefix    string
		size      uint64
		second    string // Nth(p, 1); "" for a /32
		last      string
		lastIndex uint64
	}{
		{"0.0.0.0/0", 1 << 32, "0.0.0.1", "255.255.255.255", 1<<32 - 1},
		{"10.42.0.0/16", 1 << 16, "10.42.0.1", "10.42.255.255", 1<<16 - 1},
		{"10.42.7.0/24", 256, "10.42.7.1", "10.42.7.255", 255},
		{"10.42.7.4/30", 4, "10.42.7.5", "10.42.7.7", 3},
		{"10.42.7.9/32", 1, "", "10.42.7.9", 0},
		{"255.255.255.255/32", 1, "", "255.255.255.255", 0},
	} {
		p := netip.MustParsePrefix(c.prefix)
		if got := Size(p); got != c.size {
			t.Errorf("Size(%s) = %d, want %d", p, got, c.size)
		}
		if got := Nth(p, 0); got != p.Addr() {
			t.Errorf("Nth(%s, 0) = %s, want the network address", p, got)
		}
		if c.second != "" {
			if got := Nth(p, 1); got != netip.MustParseAddr(c.second) {
				t.Errorf("Nth(%s, 1) = %s, want %s", p, got, c.second)
			}
			if got := Index(p, netip.MustParseAddr(c.second)); got != 1 {
				t.Errorf("Index(%s, %s) = %d, want 1", p, c.second, got)
			}
		}
		last := netip.MustParseAddr(c.last)
		if got := Last(p); got != last {
			t.Errorf("Last(%s) = %s, want %s", p, got, last)
		}
		if got := Nth(p, c.size-1); got != last {
			t.Errorf("Nth(%s, Size-1) = %s, want Last %s", p, got, last)
		}
		if got := Index(p, last); got != c.lastIndex {
			t.Errorf("Index(%s, %s) = %d, want %d", p, last, got, c.lastIndex)
		}
		if got := Index(p, p.Addr()); got != 0 {
			t.Errorf("Index(%s, network address) = %d, want 0", p, got)
		}
	}
}

func TestSubnetsAndSubnet(t *testing.T) {
	for _, c := range []struct {
		space       string
		bits        int
		count       uint64
		first, last string
	}{
		{"10.42.0.0/16", 24, 256, "10.42.0.0/24", "10.42.255.0/24"},
		{"10.42.0.0/16", 16, 1, "10.42.0.0/16", "10.42.0.0/16"}, // the space itself
		{"10.42.0.0/16", 32, 1 << 16, "10.42.0.0/32", "10.42.255.255/32"},
		{"10.42.0.0/16", 30, 1 << 14, "10.42.0.0/30", "10.42.255.252/30"},
		{"0.0.0.0/0", 0, 1, "0.0.0.0/0", "0.0.0.0/0"},
		{"0.0.0.0/0", 1, 2, "0.0.0.0/1", "128.0.0.0/1"},
		{"0.0.0.0/0", 32, 1 << 32, "0.0.0.0/32", "255.255.255.255/32"},
		{"10.42.7.9/32", 32, 1, "10.42.7.9/32", "10.42.7.9/32"},
	} {
		space := netip.MustParsePrefix(c.space)
		n := Subnets(space, c.bits)
		if n != c.count {
			t.Errorf("Subnets(%s, %d) = %d, want %d", space, c.bits, n, c.count)
			continue
		}
		if got := Subnet(space, c.bits, 0); got != netip.MustParsePrefix(c.first) {
			t.Errorf("Subnet(%s, %d, 0) = %s, want %s", space, c.bits, got, c.first)
		}
		if got := Subnet(space, c.bits, n-1); got != netip.MustParsePrefix(c.last) {
			t.Errorf("Subnet(%s, %d, %d) = %s, want %s (the last)", space, c.bits, n-1, got, c.last)
		}
	}
	// Consecutive subnets are adjacent and inside the space.
	space := netip.MustParsePrefix("10.42.0.0/22")
	for i := range Subnets(space, 24) {
		s := Subnet(space, 24, i)
		if !space.Contains(s.Addr()) || !space.Contains(Last(s)) {
			t.Errorf("Subnet(%s, 24, %d) = %s, outside the space", space, i, s)
		}
		if i > 0 && Nth(Subnet(space, 24, i-1), 256) != s.Addr() {
			t.Errorf("Subnet(%s, 24, %d) = %s does not follow subnet %d", space, i, s, i-1)
		}
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, c := range []struct{ prefix, key string }{
		{"10.42.0.0/16", "10.42.0.0-16"},
		{"0.0.0.0/0", "0.0.0.0-0"},
		{"10.42.7.9/32", "10.42.7.9-32"},
		{"255.255.255.0/24", "255.255.255.0-24"},
	} {
		p := netip.MustParsePrefix(c.prefix)
		if got := Key(p); got != c.key {
			t.Errorf("Key(%s) = %q, want %q", p, got, c.key)
		}
		back, err := ParseKey(c.key)
		if err != nil || back != p {
			t.Errorf("ParseKey(%q) = %s, %v; want %s", c.key, back, err, p)
		}
	}
}

func TestParseKeyRefuses(t *testing.T) {
	for _, k := range []string{
		"",
		"10.42.0.0",      // no length
		"10.42.0.0/16",   // a CIDR, not a key
		"10.42.0.0-",     // empty length
		"10.42.0.0-33",   // too long
		"10.42.0.0--16",  // the last dash splits: "10.42.0.0-" is no address
		"10.42.0-16",     // short address
		"net-16",         // not an address
		"10.42.0.0-16-x", // trailing junk
	} {
		if p, err := ParseKey(k); err == nil {
			t.Errorf("ParseKey(%q) = %s, want an error", k, p)
		}
	}
	if _, err := ParseKey("no dash"); err == nil || !strings.Contains(err.Error(), `"no dash"`) {
		t.Errorf("ParseKey without a dash: %v; want an error quoting the key", err)
	}
}

func TestParsePrefix(t *testing.T) {
	for _, s := range []string{"10.42.0.0/16", "0.0.0.0/0", "10.42.7.9/32", "192.168.1.0/24"} {
		p, err := ParsePrefix(s)
		if err != nil || p != netip.MustParsePrefix(s) {
			t.Errorf("ParsePrefix(%q) = %s, %v", s, p, err)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"", "is not a CIDR"},
		{"10.42.0.0", "is not a CIDR"},
		{"10.42.0.0/33", "is not a CIDR"},
		{"ten/8", "is not a CIDR"},
		{"fd00::/64", "is not IPv4"},
		{"::ffff:10.0.0.0/104", "is not IPv4"},
		{"10.42.1.7/16", "has host bits set (did you mean 10.42.0.0/16?)"},
		{"10.0.0.1/0", "did you mean 0.0.0.0/0?"},
	} {
		p, err := ParsePrefix(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParsePrefix(%q) = %s, %v; want an error containing %q", c.in, p, err, c.want)
		}
	}
}
