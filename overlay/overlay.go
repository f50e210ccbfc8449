// Package overlay connects a felt network's bridge on this host to the same
// network's subnets on other hosts. A Backend knows one encapsulation (or
// none, for host-gw); the Manager runs one reconciler per network that keeps
// kernel state equal to the leases in the store.
package overlay

import (
	"crypto/sha256"
	"net"
	"net/netip"
)

// Network is what a backend needs to know about one felt network here.
type Network struct {
	ID            string       // Docker's network ID on this host
	Pool          netip.Prefix // the overlay's pool, the same on every host
	Subnet        netip.Prefix // this host's lease
	Bridge        string
	Backend       string
	VNI           int
	MTU           int
	DirectRouting bool
	Port          int
}

// Overhead is the bytes a backend's encapsulation adds to each packet: the
// container MTU is the underlay's minus this.
func Overhead(backend string) int {
	switch backend {
	case "vxlan":
		return 50 // outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
	case "udp":
		return 28 // outer IP 20 + UDP 8
	default:
		return 0
	}
}

// VtepMAC is the MAC address of this host's VTEP for a pool. Deriving it
// from the host ID and the pool means the lease can carry it before the
// device exists, and a recreated device keeps it, so peers' FDB and
// neighbour entries stay valid.
func VtepMAC(hostID string, pool netip.Prefix) net.HardwareAddr {
	sum := sha256.Sum256([]byte(hostID + "/" + pool.String()))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] &^ 0x01) | 0x02 // unicast, locally administered
	return mac
}
