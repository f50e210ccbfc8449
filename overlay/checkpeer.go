package overlay

import (
	"fmt"
	"net/netip"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// CheckPeer rejects leases a backend must not program: a route for a subnet
// outside the pool, or overlapping this host's own subnet, would replace a
// route that is not the peer's (such as the bridge's own); and a public IP
// that cannot be a peer host's address (PublicIPError) would have every
// backend send the subnet's traffic where no peer is. The subnet is checked
// first: a *PublicIPError means the subnet itself is fine.
//
// The Manager leaves the leases it refuses out of every network's peers
// (peerfilter.go), logged once: no backend sees them, so none checks
// again.
func CheckPeer(n Network, p lease.Lease) error {
	if accepted(&n, &p) {
		return nil
	}
	return checkPeer(n, p)
}

// checkPeer is CheckPeer without its shortcut: the reasons.
func checkPeer(n Network, p lease.Lease) error {
	switch {
	case !p.Subnet.IsValid() || !p.Subnet.Addr().Is4():
		return fmt.Errorf("peer %s: subnet %s is not an IPv4 prefix", p.HostID, p.Subnet)
	case p.Subnet.Masked() != p.Subnet:
		return fmt.Errorf("peer %s: subnet %s has host bits set", p.HostID, p.Subnet)
	case !kernel.Within(p.Subnet, n.Pool):
		return fmt.Errorf("peer %s: subnet %s is outside pool %s", p.HostID, p.Subnet, n.Pool)
	case n.Subnet.IsValid() && p.Subnet.Overlaps(n.Subnet):
		return fmt.Errorf("peer %s: subnet %s overlaps this host's subnet %s", p.HostID, p.Subnet, n.Subnet)
	}
	if why := publicIPProblem(p.PublicIP, n.Pool); why != "" {
		return &PublicIPError{HostID: p.HostID, Subnet: p.Subnet, IP: p.PublicIP, Why: why}
	}
	return nil
}

// PublicIPError is CheckPeer's refusal of a lease whose public IP cannot be
// a peer host's (unicast, underlay) address; its subnet is fine.
type PublicIPError struct {
	HostID string
	Subnet netip.Prefix
	IP     netip.Addr
	Why    string // "is …"
}

func (e *PublicIPError) Error() string {
	return fmt.Sprintf("peer %s (subnet %s): public IP %q %s", e.HostID, e.Subnet, e.IP, e.Why)
}

// publicIPProblem says why ip cannot be the public IP of a peer of the
// network with pool, or "". Private and link-local unicast addresses are
// fine (hosts on one LAN, test setups), and so is 240.0.0.0/4, which Linux
// routes as unicast; the broadcast address of the underlay's subnet is not
// known here.
func publicIPProblem(ip netip.Addr, pool netip.Prefix) string {
	switch {
	case !ip.IsValid() || !ip.Is4():
		return "is not an IPv4 address"
	case ip.As4()[0] == 0: // 0.0.0.0/8, the unspecified address included
		return "is unspecified (0.0.0.0/8 means this host, not another one)"
	case ip.IsLoopback():
		return "is a loopback address: packets to it would never leave this host"
	case ip.IsMulticast(): // link-local multicast (224.0.0.0/24) included
		return "is a multicast address, not a host's"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "is the broadcast address, not a host's"
	case pool.IsValid() && pool.Contains(ip):
		return fmt.Sprintf("lies in the network's pool %s: packets to the peer would be routed into the overlay itself", pool)
	}
	return ""
}

// accepted is CheckPeer's acceptance worked out on 32-bit integers: true
// only for a lease CheckPeer accepts; false also when unsure (then the
// checks below, with their reasons, decide). The Manager checks every
// lease of a pool at every lease change (isPeer), and through netip the
// checks cost four times the rest of that walk.
func accepted(n *Network, p *lease.Lease) bool {
	s, pool, own := p.Subnet, n.Pool, n.Subnet
	if !s.IsValid() || !pool.IsValid() || !s.Addr().Is4() || !pool.Addr().Is4() || !p.PublicIP.Is4() {
		return false
	}
	a, pa, ip := be32(s.Addr()), be32(pool.Addr()), be32(p.PublicIP)
	sb, pb := s.Bits(), pool.Bits()
	pm := mask(pb)
	switch {
	case a&^mask(sb) != 0, sb < pb, (a^pa)&pm != 0: // host bits; not within the pool
		return false
	case own.IsValid() && (!own.Addr().Is4() || (a^be32(own.Addr()))&mask(min(sb, own.Bits())) == 0): // overlaps ours
		return false
	}
	switch top := ip >> 24; {
	case top == 0, top == 127, top >= 224 && top < 240, ip == 0xffffffff, (ip^pa)&pm == 0:
		return false
	}
	return true
}

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// mask is the netmask of a prefix of bits bits (0 to 32).
func mask(bits int) uint32 {
	if bits <= 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}
