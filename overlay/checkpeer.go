package overlay

import (
	"fmt"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// CheckPeer rejects leases a backend must not program: a route for a subnet
// outside the pool, or overlapping this host's own subnet, would replace a
// route that is not the peer's (such as the bridge's own).
func CheckPeer(n Network, p lease.Lease) error {
	switch {
	case !p.Subnet.IsValid() || !p.Subnet.Addr().Is4():
		return fmt.Errorf("peer %s: subnet %s is not an IPv4 prefix", p.HostID, p.Subnet)
	case p.Subnet.Masked() != p.Subnet:
		return fmt.Errorf("peer %s: subnet %s has host bits set", p.HostID, p.Subnet)
	case !kernel.Within(p.Subnet, n.Pool):
		return fmt.Errorf("peer %s: subnet %s is outside pool %s", p.HostID, p.Subnet, n.Pool)
	case n.Subnet.IsValid() && p.Subnet.Overlaps(n.Subnet):
		return fmt.Errorf("peer %s: subnet %s overlaps this host's subnet %s", p.HostID, p.Subnet, n.Subnet)
	case !p.PublicIP.IsValid() || !p.PublicIP.Is4():
		return fmt.Errorf("peer %s (subnet %s): public IP %q is not an IPv4 address", p.HostID, p.Subnet, p.PublicIP)
	}
	return nil
}
