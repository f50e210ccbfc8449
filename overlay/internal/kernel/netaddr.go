package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/lease"
)

// prefixOf converts a net.IPNet (what netlink speaks) to a netip.Prefix
// (what felt speaks), keeping the address as given (not masked).
func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipOf(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// within reports whether p lies entirely inside pool.
func within(p, pool netip.Prefix) bool {
	return p.IsValid() && p.Bits() >= pool.Bits() && pool.Contains(p.Addr())
}

// isNotFound reports the kernel's "nothing to delete" answers, which an
// idempotent delete treats as success.
func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV)
}

// checkPeer rejects leases a backend must not program: a route for a subnet
// outside the pool, or overlapping this host's own subnet, would replace a
// route that is not the peer's (such as the bridge's own).
func checkPeer(n Network, p lease.Lease) error {
	switch {
	case !p.Subnet.IsValid() || !p.Subnet.Addr().Is4():
		return fmt.Errorf("peer %s: subnet %s is not an IPv4 prefix", p.HostID, p.Subnet)
	case p.Subnet.Masked() != p.Subnet:
		return fmt.Errorf("peer %s: subnet %s has host bits set", p.HostID, p.Subnet)
	case !within(p.Subnet, n.Pool):
		return fmt.Errorf("peer %s: subnet %s is outside pool %s", p.HostID, p.Subnet, n.Pool)
	case n.Subnet.IsValid() && p.Subnet.Overlaps(n.Subnet):
		return fmt.Errorf("peer %s: subnet %s overlaps this host's subnet %s", p.HostID, p.Subnet, n.Subnet)
	case !p.PublicIP.IsValid() || !p.PublicIP.Is4():
		return fmt.Errorf("peer %s (subnet %s): public IP %q is not an IPv4 address", p.HostID, p.Subnet, p.PublicIP)
	}
	return nil
}
