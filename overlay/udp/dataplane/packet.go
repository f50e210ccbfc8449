package dataplane

import (
	"encoding/binary"
	"net/netip"
)

const ipv4HeaderLen = 20

// prefix4 is an IPv4 prefix as the data path tests it: one AND and one
// compare on the address as a big-endian uint32.
type prefix4 struct{ base, mask uint32 }

func newPrefix4(p netip.Prefix) prefix4 {
	var mask uint32
	if p.Bits() > 0 {
		mask = ^uint32(0) << (32 - p.Bits())
	}
	a := p.Addr().As4()
	return prefix4{base: binary.BigEndian.Uint32(a[:]) & mask, mask: mask}
}

func (p prefix4) contains(a uint32) bool { return a&p.mask == p.base }

// ipv4Dst returns the destination of a packet read from the TUN; ok is
// false for anything that is not IPv4.
func ipv4Dst(pkt []byte) (dst uint32, ok bool) {
	if len(pkt) < ipv4HeaderLen || pkt[0]>>4 != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(pkt[16:20]), true
}

// ipv4Addrs checks that a packet from a peer is a whole IPv4 packet (its
// header's total length is what arrived: a datagram, or a joined frame,
// holds exactly one packet) and returns its source and destination. The kernel checks the
// rest (header checksum, options) when the packet is written to the TUN.
func ipv4Addrs(pkt []byte) (src, dst uint32, ok bool) {
	if len(pkt) < ipv4HeaderLen || pkt[0]>>4 != 4 {
		return 0, 0, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if ihl < ipv4HeaderLen || total < ihl || total != len(pkt) {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(pkt[12:16]), binary.BigEndian.Uint32(pkt[16:20]), true
}
