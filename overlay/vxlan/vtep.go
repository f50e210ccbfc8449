package vxlan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// Setup makes the VTEP exist as n needs it: recreated when missing or when
// its VNI, local IP, port, parent, MAC or learning differ (those cannot all
// be changed in place), with n's MTU, the address <subnet .0>/32, felt's
// owner mark for n, and up.
func (b *Backend) Setup(ctx context.Context, n overlay.Network) error {
	if n.VNI < 1 || n.VNI > 1<<24-1 {
		return fmt.Errorf("vxlan %s: VNI %d is outside 1-16777215", n.Pool, n.VNI)
	}
	if !n.Subnet.IsValid() || !n.Subnet.Addr().Is4() {
		return fmt.Errorf("vxlan %s: this host's subnet %q is not an IPv4 prefix", VTEPName(n.VNI), n.Subnet)
	}
	want, err := b.wantVTEP(n)
	if err != nil {
		return err
	}
	link, err := b.ensureVTEP(want)
	if err != nil {
		return err
	}
	if err := overlay.SetOwner(b.cfg.Netlink, link, want.Alias); err != nil {
		return fmt.Errorf("vxlan %s: %w", want.Name, err)
	}
	if link.Attrs().MTU != want.MTU {
		if err := b.cfg.Netlink.LinkSetMTU(link, want.MTU); err != nil {
			return fmt.Errorf("vxlan %s: mtu %d: %w", want.Name, want.MTU, err)
		}
	}
	if err := b.ensureAddr(link, n.Subnet.Masked().Addr()); err != nil {
		return fmt.Errorf("vxlan %s: %w", want.Name, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := b.cfg.Netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("vxlan %s: up: %w", want.Name, err)
		}
	}
	return nil
}

// wantVTEP is the device n needs on this host.
func (b *Backend) wantVTEP(n overlay.Network) (*netlink.Vxlan, error) {
	name := VTEPName(n.VNI)
	u, err := kernel.LookupUnderlay(b.cfg.Netlink, b.cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("vxlan %s: %w", name, err)
	}
	local, err := b.cfg.Host.Addr()
	if err != nil {
		return nil, fmt.Errorf("vxlan %s: local IP: %w", name, err)
	}
	if !local.Is4() {
		return nil, fmt.Errorf("vxlan %s: local IP %s is not IPv4", name, local)
	}
	mtu := n.MTU
	if mtu <= 0 {
		// The driver always passes one; this only guards a zero Network.
		mtu = u.Link.Attrs().MTU - b.Overhead()
	}
	return &netlink.Vxlan{
		// The owner mark is set at creation: no VTEP of felt's exists
		// unmarked, even for a moment a crash could catch.
		LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: VtepMAC(b.cfg.HostID, n.Pool),
			Alias: overlay.OwnerAlias(b.cfg.Instance, n.ID)},
		VxlanId:      n.VNI,
		VtepDevIndex: u.Link.Attrs().Index,
		SrcAddr:      kernel.IPOf(local),
		Port:         Port,
		Learning:     false,
	}, nil
}

// ensureVTEP returns the VTEP, creating or recreating it as needed.
func (b *Backend) ensureVTEP(want *netlink.Vxlan) (netlink.Link, error) {
	link, err := b.cfg.Netlink.LinkByName(want.Name)
	switch {
	case nlerr.IsNotFound(err):
		b.cfg.Log.Info("creating VTEP", "device", want.Name, "vni", want.VxlanId, "local", want.SrcAddr.String(), "mac", want.HardwareAddr.String())
	case err != nil:
		return nil, fmt.Errorf("vxlan %s: %w", want.Name, err)
	default:
		why := vtepMismatch(link, want)
		if why == "" {
			return link, nil
		}
		b.cfg.Log.Warn("recreating VTEP", "device", want.Name, "reason", why)
		if err := b.cfg.Netlink.LinkDel(link); err != nil && !nlerr.IsNotFound(err) {
			return nil, fmt.Errorf("vxlan %s: delete to recreate (%s): %w", want.Name, why, err)
		}
	}
	add := *want // LinkAdd writes into its argument; keep want as it was
	if err := b.cfg.Netlink.LinkAdd(&add); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("vxlan %s: create: %w", want.Name, err)
	}
	link, err = b.cfg.Netlink.LinkByName(want.Name)
	if err != nil {
		return nil, fmt.Errorf("vxlan %s: after create: %w", want.Name, err)
	}
	if why := vtepMismatch(link, want); why != "" {
		// EEXIST above: something else made a device of that name meanwhile.
		return nil, fmt.Errorf("vxlan %s: device is not as created (%s)", want.Name, why)
	}
	return link, nil
}

// vtepMismatch says what about link differs from want in a way that needs
// recreating the device, or "" when nothing does. The MTU is fixed in place.
func vtepMismatch(link netlink.Link, want *netlink.Vxlan) string {
	v, ok := link.(*netlink.Vxlan)
	switch {
	case !ok:
		return fmt.Sprintf("it is a %s device, not vxlan", link.Type())
	case v.VxlanId != want.VxlanId:
		return fmt.Sprintf("VNI %d, want %d", v.VxlanId, want.VxlanId)
	case !v.SrcAddr.Equal(want.SrcAddr):
		return fmt.Sprintf("local IP %s, want %s", v.SrcAddr, want.SrcAddr)
	case v.Port != want.Port:
		return fmt.Sprintf("port %d, want %d", v.Port, want.Port)
	case v.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("parent ifindex %d, want %d", v.VtepDevIndex, want.VtepDevIndex)
	case !bytes.Equal(v.HardwareAddr, want.HardwareAddr):
		return fmt.Sprintf("MAC %s, want %s", v.HardwareAddr, want.HardwareAddr)
	case v.Learning:
		return "learning is on"
	}
	return ""
}

// ensureAddr leaves addr/32 as the VTEP's only IPv4 address (see
// kernel.OnlyAddr).
func (b *Backend) ensureAddr(link netlink.Link, addr netip.Addr) error {
	return kernel.OnlyAddr(b.cfg.Netlink, link, netip.PrefixFrom(addr, 32))
}

// Teardown deletes the VTEP (unless it is another network's by now, see
// deleteDevice), which takes its neighbour and FDB entries and the routes
// through it along, and the direct routes of the pool.
func (b *Backend) Teardown(_ context.Context, n overlay.Network) error {
	b.records.Forget(n.ID)
	var errs []error
	if n.VNI > 0 {
		name := VTEPName(n.VNI)
		if _, err := overlay.DeleteDevice(b.cfg.Netlink, name, overlay.OwnerAlias(b.cfg.Instance, n.ID)); err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
		}
	}
	if _, err := kernel.PruneRoutes(b.cfg.Netlink, n.Pool, nil); err != nil {
		errs = append(errs, fmt.Errorf("vxlan %s: direct routes: %w", n.Pool, err))
	}
	return errors.Join(errs...)
}
