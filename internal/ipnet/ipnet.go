// Package ipnet holds the IPv4 prefix arithmetic felt needs: splitting a pool
// into host subnets and walking the addresses of a subnet (ipnet.go), store
// keys of prefixes (Key, ParseKey), and finding free subnets by index in
// memory proportional to what is taken (free.go).
package ipnet

import (
	"fmt"
	"net/netip"
)

// ParsePrefix parses an IPv4 CIDR and insists it is in canonical form
// (10.42.0.0/16, not 10.42.1.7/16), naming what was wrong.
func ParsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (want e.g. 10.42.0.0/16)", s)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not IPv4: felt supports IPv4 pools only", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

// Size is the number of addresses in p.
func Size(p netip.Prefix) uint64 { return 1 << (32 - p.Bits()) }

// Nth returns the n-th address of p (0 is the network address).
func Nth(p netip.Prefix, n uint64) netip.Addr {
	return FromUint32(ToUint32(p.Addr()) + uint32(n))
}

// Index is the position of a within p.
func Index(p netip.Prefix, a netip.Addr) uint64 {
	return uint64(ToUint32(a) - ToUint32(p.Addr()))
}

// Last returns the last (broadcast) address of p.
func Last(p netip.Prefix) netip.Addr { return Nth(p, Size(p)-1) }

// ToUint32 converts an IPv4 address to its integer form.
func ToUint32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// FromUint32 converts an integer back to an IPv4 address.
func FromUint32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Subnets returns how many subnets of length bits p splits into: none for a
// length shorter than p's or longer than 32 (a negative shift used to ask
// for a number of 2^64 bits, and panicked).
func Subnets(p netip.Prefix, bits int) uint64 {
	if bits < p.Bits() || bits > 32 {
		return 0
	}
	return 1 << uint(bits-p.Bits())
}

// Subnet returns the i-th subnet of length bits inside p.
func Subnet(p netip.Prefix, bits int, i uint64) netip.Prefix {
	step := uint64(1) << (32 - bits)
	return netip.PrefixFrom(FromUint32(ToUint32(p.Addr())+uint32(i*step)), bits)
}

// Key renders a prefix for use in a store key or a name ("10.42.0.0-16").
func Key(p netip.Prefix) string { return fmt.Sprintf("%s-%d", p.Addr(), p.Bits()) }

// ParseKey is the inverse of Key.
func ParseKey(k string) (netip.Prefix, error) {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == '-' {
			return netip.ParsePrefix(k[:i] + "/" + k[i+1:])
		}
	}
	return netip.Prefix{}, fmt.Errorf("bad prefix key %q", k)
}
