package wireguard

import (
	"bytes"
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// peer is a WireGuard peer as a lease asks for it.
type peer struct {
	HostID   string
	Key      wgtypes.Key
	Endpoint netip.AddrPort // the lease's public IP, the network's port
	Subnet   netip.Prefix   // the lease's: the peer's allowed IPs
}

// skip is a lease that routes to the device but gets no WireGuard peer,
// and why.
type skip struct {
	HostID string
	Subnet netip.Prefix
	Why    string
}

// wantedPeers turns the leases of n's pool held by other hosts into
// WireGuard peers. A lease a backend must not program (overlay.CheckPeer)
// is an error and gets nothing. A lease without a usable key is skipped:
// none or a malformed one, this host's own key, or a key two leases share
// (copied state: WireGuard tells peers apart by key alone, so neither can
// be told which of them sent a packet). A skipped lease still gets its
// route (routes), through the device, which drops what it has no peer
// for: without it, traffic to that subnet would leave in clear by the
// default route.
func wantedPeers(n overlay.Network, own wgtypes.Key, leases []lease.Lease) (want []peer, routes []netip.Prefix, skips []skip, errs []error) {
	byKey := map[wgtypes.Key][]int{}
	var cands []peer
	for _, l := range leases {
		if err := overlay.CheckPeer(n, l); err != nil {
			errs = append(errs, err)
			continue
		}
		routes = append(routes, l.Subnet)
		s := LeasePublicKey(l)
		var why string
		key, err := wgtypes.ParseKey(s)
		switch {
		case s == "":
			why = "its lease has no WireGuard public key (wgPublicKey): is that host's felt too old for wireguard, or its key file unusable?"
		case err != nil:
			why = fmt.Sprintf("its lease's WireGuard public key %q is malformed", s)
		case key == own:
			why = "its lease has this host's own public key: was this host's state directory copied to it? Remove " + KeyFile + " on one of them"
		}
		if why != "" {
			skips = append(skips, skip{HostID: l.HostID, Subnet: l.Subnet, Why: why})
			continue
		}
		byKey[key] = append(byKey[key], len(cands))
		cands = append(cands, peer{HostID: l.HostID, Key: key, Endpoint: netip.AddrPortFrom(l.PublicIP, uint16(n.Port)), Subnet: l.Subnet})
	}
	for _, p := range cands {
		if same := byKey[p.Key]; len(same) > 1 {
			var hosts []string
			for _, i := range same {
				if cands[i].HostID != p.HostID || cands[i].Subnet != p.Subnet {
					hosts = append(hosts, cands[i].HostID)
				}
			}
			skips = append(skips, skip{HostID: p.HostID, Subnet: p.Subnet,
				Why: fmt.Sprintf("its lease's public key is also in the lease of host %v: copied state? Remove %s on all but one", hosts, KeyFile)})
			continue
		}
		want = append(want, p)
	}
	slices.SortFunc(want, func(a, b peer) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	return want, routes, skips, errs
}

// config is p as wgctrl configures it: its allowed IPs replaced by its
// subnet, so a subnet that moved to another host is never claimed twice.
func (p peer) config() wgtypes.PeerConfig {
	return wgtypes.PeerConfig{
		PublicKey:         p.Key,
		Endpoint:          net.UDPAddrFromAddrPort(p.Endpoint),
		ReplaceAllowedIPs: true,
		AllowedIPs:        []net.IPNet{ipNet(p.Subnet)},
	}
}

// diffPeers is the change that turns the device's peers (have) into want:
// new peers and those whose endpoint or allowed IPs differ are set, peers
// not wanted (a lease gone, a key changed) removed, and the others left
// alone, so that their sessions go on. Never ReplacePeers: it would make
// every peer handshake again at each Sync.
func diffPeers(have []wgtypes.Peer, want []peer) []wgtypes.PeerConfig {
	byKey := map[wgtypes.Key]wgtypes.Peer{}
	for _, h := range have {
		byKey[h.PublicKey] = h
	}
	var out []wgtypes.PeerConfig
	wanted := map[wgtypes.Key]bool{}
	for _, w := range want {
		wanted[w.Key] = true
		h, ok := byKey[w.Key]
		if ok && sameEndpoint(h.Endpoint, w.Endpoint) && sameAllowed(h.AllowedIPs, w.Subnet) {
			continue
		}
		out = append(out, w.config())
	}
	for _, h := range have {
		if !wanted[h.PublicKey] {
			out = append(out, wgtypes.PeerConfig{PublicKey: h.PublicKey, Remove: true})
		}
	}
	slices.SortFunc(out, func(a, b wgtypes.PeerConfig) int {
		return cmp.Or(bytes.Compare(a.PublicKey[:], b.PublicKey[:]), boolCmp(a.Remove, b.Remove))
	})
	return out
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

func sameEndpoint(have *net.UDPAddr, want netip.AddrPort) bool {
	return have != nil && have.AddrPort().Addr().Unmap() == want.Addr() && have.AddrPort().Port() == want.Port()
}

func sameAllowed(have []net.IPNet, want netip.Prefix) bool {
	if len(have) != 1 {
		return false
	}
	a, ok := netip.AddrFromSlice(have[0].IP)
	ones, bits := have[0].Mask.Size()
	return ok && bits == 32 && netip.PrefixFrom(a.Unmap(), ones) == want
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
