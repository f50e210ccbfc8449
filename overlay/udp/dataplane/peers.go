package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Peer is where the packets for one subnet of the pool go.
type Peer struct {
	Subnet netip.Prefix   // the peer host's lease
	Addr   netip.AddrPort // its public IP and the network's port
}

// peerDest is one peer as the send loop uses it.
type peerDest struct {
	subnet prefix4
	addr   *net.UDPAddr // made once: WriteBatch wants a net.Addr per message
}

// peerTable finds the peer holding a destination: the longest of the
// peers' subnets that contains it. It is never changed once built; SetPeers
// swaps in a new one, so the send loop reads it without a lock.
type peerTable struct {
	lens  []int // the distinct prefix lengths, longest first
	byKey map[uint64]*peerDest
}

func tableKey(masked uint32, bits int) uint64 { return uint64(bits)<<32 | uint64(masked) }

func newPeerTable(peers []Peer) (*peerTable, error) {
	t := &peerTable{byKey: make(map[uint64]*peerDest, len(peers))}
	for _, p := range peers {
		if !p.Subnet.IsValid() || !p.Subnet.Addr().Is4() || !p.Addr.Addr().Unmap().Is4() || p.Addr.Port() == 0 {
			return nil, fmt.Errorf("peer %s at %s: want an IPv4 subnet and IPv4 address with a port", p.Subnet, p.Addr)
		}
		sub := newPrefix4(p.Subnet)
		ip := p.Addr.Addr().Unmap().As4()
		d := &peerDest{subnet: sub, addr: &net.UDPAddr{IP: net.IP(ip[:]), Port: int(p.Addr.Port())}}
		t.byKey[tableKey(sub.base, p.Subnet.Bits())] = d
		if !slices.Contains(t.lens, p.Subnet.Bits()) {
			t.lens = append(t.lens, p.Subnet.Bits())
		}
	}
	slices.Sort(t.lens)
	slices.Reverse(t.lens)
	return t, nil
}

// lookup returns the peer for dst, or nil. Leases of one pool usually share
// one length, so this is one map lookup.
func (t *peerTable) lookup(dst uint32) *peerDest {
	for _, bits := range t.lens {
		var mask uint32
		if bits > 0 {
			mask = ^uint32(0) << (32 - bits)
		}
		if d := t.byKey[tableKey(dst&mask, bits)]; d != nil {
			return d
		}
	}
	return nil
}
