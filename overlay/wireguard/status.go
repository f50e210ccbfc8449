package wireguard

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/felt-net/felt/overlay"
)

// Status is a wireguard network's device as wgctrl reads it.
type Status struct {
	Implementation string // ImplKernel or ImplUserspace
	Device         string
	PublicKey      string // this host's
	ListenPort     int
	Peers          []PeerStatus
}

// PeerStatus is one WireGuard peer of the device.
type PeerStatus struct {
	PublicKey       string
	Endpoint        string   // ip:port; "" when unknown
	AllowedIPs      []string // the peer's subnet
	LatestHandshake time.Time
	ReceiveBytes    int64
	TransmitBytes   int64
}

// StatusReporter is implemented by the wireguard backend: the state of a
// network's device (ok false when it has not set it up; err when the
// device could not be read).
type StatusReporter interface {
	WireGuardStatus(n overlay.Network) (st Status, ok bool, err error)
}

var _ StatusReporter = (*Backend)(nil)

// WireGuardStatus reads n's device through wgctrl.
func (b *Backend) WireGuardStatus(n overlay.Network) (Status, bool, error) {
	b.mu.Lock()
	st := b.nets[n.ID]
	impl := ""
	if st != nil {
		impl = st.impl
	}
	b.mu.Unlock()
	if impl == "" || !n.Pool.IsValid() || !n.Pool.Addr().Is4() {
		return Status{}, false, nil
	}
	name := DeviceName(n.Pool)
	out := Status{Implementation: impl, Device: name}
	err := b.withClient(func(c *wgctrl.Client) error {
		d, err := c.Device(name)
		if err != nil {
			return err
		}
		out.PublicKey, out.ListenPort = d.PublicKey.String(), d.ListenPort
		for _, p := range d.Peers {
			ps := PeerStatus{PublicKey: p.PublicKey.String(), ReceiveBytes: p.ReceiveBytes, TransmitBytes: p.TransmitBytes}
			if t := p.LastHandshakeTime; !t.IsZero() && t.UnixNano() != 0 {
				ps.LatestHandshake = t // the epoch is how some report "never"
			}
			if p.Endpoint != nil {
				ps.Endpoint = p.Endpoint.String()
			}
			for _, a := range p.AllowedIPs {
				ps.AllowedIPs = append(ps.AllowedIPs, a.String())
			}
			out.Peers = append(out.Peers, ps)
		}
		return nil
	})
	if err != nil {
		return out, true, fmt.Errorf(Name+" %s: read device: %w", name, err)
	}
	slices.SortFunc(out.Peers, func(x, y PeerStatus) int { return firstAllowed(x).Compare(firstAllowed(y)) })
	return out, true, nil
}

// firstAllowed is the address of p's first allowed prefix (its subnet),
// which orders peers as the leases are.
func firstAllowed(p PeerStatus) netip.Addr {
	if len(p.AllowedIPs) == 0 {
		return netip.Addr{}
	}
	pfx, _ := netip.ParsePrefix(p.AllowedIPs[0])
	return pfx.Addr()
}
