package overlay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vxlan is the "vxlan" backend, flannel's L3 design: one VTEP per network
// with learning off, and for each peer a static neighbour entry, FDB entry
// and route (vxlan_sync.go), so the kernel never has to learn or miss.
type vxlan struct {
	nl       *netlink.Handle
	host     Host
	hostID   string
	instance string // for the owner mark (OwnerAlias)
	log      *slog.Logger
}

// VXLANPort is the UDP port VTEPs send to and listen on (IANA's, not the
// Linux default 8472): every host must use the same.
const VXLANPort = 4789

// VTEPName is the name of the VTEP of the network with this VNI.
func VTEPName(vni int) string { return fmt.Sprintf("felt.%d", vni) }

// Setup makes the VTEP exist as n needs it: recreated when missing or when
// its VNI, local IP, port, parent, MAC or learning differ (those cannot all
// be changed in place), with n's MTU, the address <subnet .0>/32, felt's
// owner mark for n, and up.
func (b *vxlan) Setup(ctx context.Context, n Network) error {
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
	if err := setOwner(b.nl, link, want.Alias); err != nil {
		return fmt.Errorf("vxlan %s: %w", want.Name, err)
	}
	if link.Attrs().MTU != want.MTU {
		if err := b.nl.LinkSetMTU(link, want.MTU); err != nil {
			return fmt.Errorf("vxlan %s: mtu %d: %w", want.Name, want.MTU, err)
		}
	}
	if err := b.ensureAddr(link, n.Subnet.Masked().Addr()); err != nil {
		return fmt.Errorf("vxlan %s: %w", want.Name, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := b.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("vxlan %s: up: %w", want.Name, err)
		}
	}
	return nil
}

// wantVTEP is the device n needs on this host.
func (b *vxlan) wantVTEP(n Network) (*netlink.Vxlan, error) {
	name := VTEPName(n.VNI)
	u, err := lookupUnderlay(b.nl, b.host)
	if err != nil {
		return nil, fmt.Errorf("vxlan %s: %w", name, err)
	}
	local, err := b.host.Addr()
	if err != nil {
		return nil, fmt.Errorf("vxlan %s: local IP: %w", name, err)
	}
	if !local.Is4() {
		return nil, fmt.Errorf("vxlan %s: local IP %s is not IPv4", name, local)
	}
	mtu := n.MTU
	if mtu <= 0 {
		// The driver always passes one; this only guards a zero Network.
		mtu = u.link.Attrs().MTU - Overhead("vxlan")
	}
	return &netlink.Vxlan{
		// The owner mark is set at creation: no VTEP of felt's exists
		// unmarked, even for a moment a crash could catch.
		LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: VtepMAC(b.hostID, n.Pool),
			Alias: OwnerAlias(b.instance, n.ID)},
		VxlanId:      n.VNI,
		VtepDevIndex: u.link.Attrs().Index,
		SrcAddr:      ipOf(local),
		Port:         VXLANPort,
		Learning:     false,
	}, nil
}

// ensureVTEP returns the VTEP, creating or recreating it as needed.
func (b *vxlan) ensureVTEP(want *netlink.Vxlan) (netlink.Link, error) {
	link, err := b.nl.LinkByName(want.Name)
	switch {
	case isNotFound(err):
		b.log.Info("creating VTEP", "device", want.Name, "vni", want.VxlanId, "local", want.SrcAddr.String(), "mac", want.HardwareAddr.String())
	case err != nil:
		return nil, fmt.Errorf("vxlan %s: %w", want.Name, err)
	default:
		why := vtepMismatch(link, want)
		if why == "" {
			return link, nil
		}
		b.log.Warn("recreating VTEP", "device", want.Name, "reason", why)
		if err := b.nl.LinkDel(link); err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("vxlan %s: delete to recreate (%s): %w", want.Name, why, err)
		}
	}
	add := *want // LinkAdd writes into its argument; keep want as it was
	if err := b.nl.LinkAdd(&add); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("vxlan %s: create: %w", want.Name, err)
	}
	link, err = b.nl.LinkByName(want.Name)
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

// ensureAddr leaves addr/32 as the VTEP's only IPv4 address (see onlyAddr).
func (b *vxlan) ensureAddr(link netlink.Link, addr netip.Addr) error {
	return onlyAddr(b.nl, link, netip.PrefixFrom(addr, 32))
}

// Teardown deletes the VTEP (unless it is another network's by now, see
// deleteDevice), which takes its neighbour and FDB entries and the routes
// through it along, and the direct routes of the pool.
func (b *vxlan) Teardown(_ context.Context, n Network) error {
	var errs []error
	if n.VNI > 0 {
		name := VTEPName(n.VNI)
		if _, err := deleteDevice(b.nl, name, OwnerAlias(b.instance, n.ID)); err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: %w", name, err))
		}
	}
	if _, err := pruneRoutes(b.nl, n.Pool, nil); err != nil {
		errs = append(errs, fmt.Errorf("vxlan %s: direct routes: %w", n.Pool, err))
	}
	return errors.Join(errs...)
}
