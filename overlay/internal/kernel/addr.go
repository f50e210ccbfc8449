package kernel

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/internal/nlerr"
)

// OnlyAddr leaves want as link's only IPv4 address: the address of the
// device a backend made for a network (vxlan's VTEP, udp's TUN). The device
// is felt's, so any other address is a leftover (e.g. this host's previous
// subnet's) and would answer for an address that is no longer ours.
func OnlyAddr(nl *netlink.Handle, link netlink.Link, want netip.Prefix) error {
	list, err := RetryDump(func() ([]netlink.Addr, error) { return nl.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("addresses: %w", err)
	}
	have := false
	for _, a := range list {
		if PrefixOf(a.IPNet) == want {
			have = true
			continue
		}
		// An address already gone is answered EADDRNOTAVAIL (ENODEV
		// when the device went).
		if err := nl.AddrDel(link, &a); err != nil && !nlerr.IsNotFound(err) && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("delete old address %s: %w", a.IPNet, err)
		}
	}
	if have {
		return nil
	}
	if err := nl.AddrAdd(link, &netlink.Addr{IPNet: IPNet(want)}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("address %s: %w", want, err)
	}
	return nil
}
