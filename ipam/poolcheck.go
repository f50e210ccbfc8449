package ipam

import (
	"fmt"
	"net/netip"
)

// Pool size limits. A pool is split into host subnets, and every host of
// the network leases one; the subnets are chosen by index arithmetic, so a
// huge pool costs no memory, but a pool wider than a /8 cannot be a
// container network next to anything else: it swallows the private
// ranges, or public ones. /8 is the largest private range (10.0.0.0/8).
// At the other end a /30 holds a gateway and one container.
const (
	minPoolBits = 8
	maxPoolBits = 30
)

// unusableRange is an address range that can never hold a container
// network, with the reason shown to the user.
type unusableRange struct {
	prefix netip.Prefix
	name   string
	why    string
}

// unusableRanges are the IPv4 special-purpose ranges (RFC 6890) that a
// container network cannot use: packets to them are not forwarded like
// unicast, or they already mean something on every host. Link-local is
// refused too: hosts answer it on every interface, and cloud metadata
// services (169.254.169.254) live there.
var unusableRanges = []unusableRange{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\"", "its addresses mean \"this host\" and are never routed"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback", "its addresses never leave a host"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local", "it is never routed, and cloud metadata services (169.254.169.254) live there"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast", "its addresses name groups, not hosts"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved", "it is reserved for future use (with the broadcast address 255.255.255.255) and hosts and routers drop it"},
}

const choosePool = "choose a private range, e.g. --subnet 10.42.0.0/16 (10.0.0.0/8, 172.16.0.0/12 and 192.168.0.0/16 are private)"

// checkPoolRange refuses pools that cannot be a container network, by
// their addresses alone: the default route, pools too large or too small,
// and special-purpose ranges. The error names the rule.
func checkPoolRange(pool netip.Prefix) error {
	switch {
	case pool.Bits() == 0:
		return fmt.Errorf("--subnet %s is the default route (every IPv4 address), not a network: %s", pool, choosePool)
	case pool.Bits() < minPoolBits:
		return fmt.Errorf("--subnet %s is too large: felt accepts pools from /%d to /%d; %s", pool, minPoolBits, maxPoolBits, choosePool)
	case pool.Bits() > maxPoolBits:
		return fmt.Errorf("--subnet %s: too small, felt needs at least a /%d (a gateway and one container)", pool, maxPoolBits)
	}
	for _, u := range unusableRanges {
		if pool.Overlaps(u.prefix) {
			return fmt.Errorf("--subnet %s overlaps the %s range %s: %s; %s", pool, u.name, u.prefix, u.why, choosePool)
		}
	}
	return nil
}

// HostNetwork is the network of one IPv4 address of one of the host's
// interfaces (its address with its prefix length, masked).
type HostNetwork struct {
	Iface  string
	Prefix netip.Prefix
	// Felt is set for links this felt instance made (bridges, overlay
	// devices): those inside the requested pool are its own for that pool
	// (left from before a restart, or a network being re-created), not a
	// conflict. Another instance's links are not flagged.
	Felt bool
}

// checkHostNetworks refuses a pool that overlaps a network of one of the
// host's interfaces: containers could not reach that network, and the host
// would have two routes for the same addresses. It names the interface.
func checkHostNetworks(pool netip.Prefix, nets []HostNetwork) error {
	for _, n := range nets {
		if !n.Prefix.IsValid() || !n.Prefix.Addr().Is4() || !n.Prefix.Overlaps(pool) {
			continue
		}
		if n.Felt && n.Prefix.Bits() >= pool.Bits() {
			continue // inside the pool (they overlap and it is not larger)
		}
		return fmt.Errorf("--subnet %s overlaps %s, the network of this host's interface %s: containers could not reach that network and the host would route its addresses two ways; choose a --subnet no interface of the host uses",
			pool, n.Prefix, n.Iface)
	}
	return nil
}
