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

// wantedPeers turns the leases of n's pool held by other hosts (each one
// overlay.CheckPeer accepts: the Manager leaves the others out) into
// WireGuard peers. A lease without a usable key is skipped: none or a
// malformed one, this host's own key, or a key two leases share (copied
// state: WireGuard tells peers apart by key alone, so neither can be told
// which of them sent a packet). A skipped lease still gets its route
// (routes), through the device, which drops what it has no peer for.
func wantedPeers(n overlay.Network, own wgtypes.Key, leases []lease.Lease) (want []peer, routes []netip.Prefix, skips []skip) {
	byKey := map[wgtypes.Key][]int{}
	var cands []peer
	for _, l := range leases {
		routes = append(routes, l.Subnet)
		s := LeasePublicKey(l)
		var why string
		key, err := wgtypes.ParseKey(s)
		switch {
		case s == "":
			why = "its lease has no WireGuard public key (wgPublicKey): is that host's felt too old for wireguard, or its key file unusable?"
		case err != nil:
			// Bounded: the lease is anyone's to write, and this is logged.
			shown := s
			if len(shown) > 64 {
				shown = shown[:64] + "…"
			}
			why = fmt.Sprintf("its lease's WireGuard public key %q (%d bytes) is malformed", shown, len(s))
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
	overlap := overlapping(leases)
	for _, p := range cands {
		if other, ok := overlap[p.HostID+"|"+p.Subnet.String()]; ok {
			skips = append(skips, skip{HostID: p.HostID, Subnet: p.Subnet,
				Why: fmt.Sprintf("its lease's subnet overlaps %s: two leases claim the same addresses, so neither gets them", other)})
			continue
		}
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
	return want, routes, skips
}

// overlapping finds the leases whose subnets overlap another lease's (a
// hostile or confused host claiming another's addresses): by host and
// subnet, a description of one lease it overlaps. WireGuard would give
// the addresses to the more specific or the last configured peer, letting
// one host receive and send as the other. Prefixes either nest or are
// disjoint, so after sorting by address (wider first) a subnet overlaps an
// earlier one exactly when it starts before the furthest end seen so far.
func overlapping(leases []lease.Lease) map[string]string {
	ls := slices.Clone(leases)
	slices.SortFunc(ls, func(a, b lease.Lease) int {
		return cmp.Or(a.Subnet.Addr().Compare(b.Subnet.Addr()), cmp.Compare(a.Subnet.Bits(), b.Subnet.Bits()))
	})
	out := map[string]string{}
	far := -1 // index in ls of the subnet reaching furthest so far
	for i, l := range ls {
		if far >= 0 {
			f := ls[far]
			if f.Subnet.Contains(l.Subnet.Addr()) && !sameLease(f, l) {
				out[l.HostID+"|"+l.Subnet.String()] = fmt.Sprintf("%s of host %s", f.Subnet, f.HostID)
				out[f.HostID+"|"+f.Subnet.String()] = fmt.Sprintf("%s of host %s", l.Subnet, l.HostID)
			}
		}
		if far < 0 || lastAddr(l.Subnet).Compare(lastAddr(ls[far].Subnet)) > 0 {
			far = i
		}
	}
	return out
}

// sameLease says whether a and b are one lease listed twice, which
// overlaps nothing.
func sameLease(a, b lease.Lease) bool {
	return a.HostID == b.HostID && a.Subnet == b.Subnet && a.PublicIP == b.PublicIP && LeasePublicKey(a) == LeasePublicKey(b)
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= uint32(1)<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// config is p as wgctrl configures it: its allowed IPs replaced by its
// subnet, so a subnet that moved to another host is never claimed twice;
// its endpoint only with withEndpoint (see diffPeers).
func (p peer) config(withEndpoint bool) wgtypes.PeerConfig {
	c := wgtypes.PeerConfig{
		PublicKey:         p.Key,
		ReplaceAllowedIPs: true,
		AllowedIPs:        []net.IPNet{ipNet(p.Subnet)},
	}
	if withEndpoint {
		c.Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
	}
	return c
}

// diffPeers is the change that turns the device's peers (have) into want:
// new peers and those whose allowed IPs differ are set, peers not wanted
// (a lease gone, a key changed) removed, and the others left alone, so
// that their sessions go on. Never ReplacePeers: it would make every peer
// handshake again at each Sync.
//
// A peer's endpoint is the lease's only where the device has none, or the
// lease's changed since felt last set it (set: by key, the endpoint of
// the lease felt last programmed; none known, as after a restart adopting
// a kernel device, the device's must then equal the lease's). Otherwise
// the device's stands: WireGuard moves it to wherever the peer's
// authenticated packets come from (roaming, NAT), and setting the lease's
// at every Sync would undo that.
func diffPeers(have []wgtypes.Peer, want []peer, set map[wgtypes.Key]netip.AddrPort) []wgtypes.PeerConfig {
	byKey := map[wgtypes.Key]wgtypes.Peer{}
	for _, h := range have {
		byKey[h.PublicKey] = h
	}
	var out []wgtypes.PeerConfig
	wanted := map[wgtypes.Key]bool{}
	for _, w := range want {
		wanted[w.Key] = true
		h, ok := byKey[w.Key]
		last, known := set[w.Key]
		setEndpoint := !ok || h.Endpoint == nil || (!known || last != w.Endpoint) && !sameEndpoint(h.Endpoint, w.Endpoint)
		if ok && !setEndpoint && sameAllowed(h.AllowedIPs, w.Subnet) {
			continue
		}
		out = append(out, w.config(setEndpoint))
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
