// Package vxlan is the "vxlan" backend, flannel's L3 design: one VTEP per
// network with learning off (vtep.go), and for each peer a static
// neighbour entry, FDB entry and route (neighbours.go), so the kernel never
// has to learn or miss; Sync (sync.go) adds them and prunes the rest. With
// directrouting, peers on the underlay's segment get a direct route
// instead. It is felt's default backend (plugin.Build registers it first).
package vxlan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// Name selects the backend: -o backend=vxlan.
const Name = "vxlan"

// Port is the UDP port VTEPs send to and listen on (IANA's, not the Linux
// default 8472): every host must use the same.
const Port = 4789

// Backend is the vxlan backend of one host.
type Backend struct {
	cfg overlay.BackendConfig // the host ID derives the VTEP MAC (VtepMAC)

	// records are what each network's last successful Sync left, by
	// network ID, for SyncPeers (delta.go).
	records kernel.Records[record]
}

// New returns the backend for the host cfg describes.
func New(cfg overlay.BackendConfig) *Backend { return &Backend{cfg: cfg.WithDefaults()} }

func (*Backend) Name() string { return Name }

// Overhead is outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8.
func (*Backend) Overhead() int { return 50 }

// Options: a VNI (allocated when not given), and directrouting.
func (*Backend) Options() overlay.Options { return overlay.Options{VNI: true, DirectRouting: true} }

// leaseData is what vxlan publishes in a lease: the MAC of the owner's VTEP
// for the pool, which peers put in their neighbour and FDB entries. The
// key is the one felt wrote before leases had backend data.
type leaseData struct {
	VtepMAC string `json:"vtepMAC"`
}

// LeaseData publishes this host's VTEP MAC for pool (VtepMAC).
func (b *Backend) LeaseData(pool netip.Prefix) any {
	return leaseData{VtepMAC: VtepMAC(b.cfg.HostID, pool).String()}
}

// LeaseVtepMAC is the VTEP MAC l publishes, as written; "" for none.
func LeaseVtepMAC(l lease.Lease) string {
	var d leaseData
	_ = json.Unmarshal(l.BackendData, &d) // no or other data: no MAC
	return d.VtepMAC
}

// peerMAC is the VTEP MAC a peer's lease publishes.
func peerMAC(p lease.Lease) (net.HardwareAddr, error) {
	s := LeaseVtepMAC(p)
	mac, err := net.ParseMAC(s)
	switch {
	case err != nil || len(mac) != 6:
		return nil, fmt.Errorf("VTEP MAC %q in lease is not a MAC address (is that host running another backend?)", s)
	case mac[0]&1 != 0:
		// A group MAC's FDB entry would send every frame to that address
		// (broadcast included) to this peer alone.
		return nil, fmt.Errorf("VTEP MAC %s in lease is a multicast or broadcast address, which no VTEP has", mac)
	case bytes.Equal(mac, make(net.HardwareAddr, 6)):
		// 00:00:00:00:00:00 is the VTEP's default FDB destination: every
		// frame with no entry of its own would go to this peer.
		return nil, fmt.Errorf("VTEP MAC %s in lease is the all-zero address, which no VTEP has", mac)
	}
	return mac, nil
}

// CheckPeerData refuses a lease whose VTEP MAC is unusable (peerMAC): the
// Manager then leaves it out of the peers (overlay.PeerChecker), so one
// bad lease does not fail every Sync of the network.
func (*Backend) CheckPeerData(_ overlay.Network, p lease.Lease) error {
	if _, err := peerMAC(p); err != nil {
		return fmt.Errorf("peer %s (subnet %s): %w", p.HostID, p.Subnet, err)
	}
	return nil
}

// DeviceName is the VTEP's name, VTEPName(n.VNI).
func (*Backend) DeviceName(n overlay.Network) string {
	if n.VNI > 0 {
		return VTEPName(n.VNI)
	}
	return ""
}

// Check has nothing to refuse: vxlan reaches any peer the underlay routes to.
func (*Backend) Check(context.Context, overlay.Network, func(context.Context) ([]lease.Lease, error)) error {
	return nil
}

// VTEPName is the name of the VTEP of the network with this VNI.
func VTEPName(vni int) string { return fmt.Sprintf("felt.%d", vni) }

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
