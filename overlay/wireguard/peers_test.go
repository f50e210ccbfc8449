package wireguard

import (
	"encoding/json"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

func newKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func leaseWith(host, pub, subnet, key string) lease.Lease {
	l := lease.Lease{Pool: pool, HostID: host, PublicIP: netip.MustParseAddr(pub), Subnet: netip.MustParsePrefix(subnet)}
	if key != "" {
		l.BackendData, _ = json.Marshal(map[string]string{"wgPublicKey": key})
	}
	return l
}

// Each lease with a good key of its own is a peer at its public IP and the
// network's port, allowed its subnet. Leases without a usable key are
// skipped, with the reason, but still routed (into the device, which drops
// their traffic). Leases no backend may program (overlay.CheckPeer) never
// get here: the Manager leaves them out (overlay's TestRefusedLeasesSkipped).
func TestWantedPeers(t *testing.T) {
	own := newKey(t)
	a, b, dup := newKey(t), newKey(t), newKey(t)
	n := overlay.Network{ID: "n", Pool: pool, Subnet: netip.MustParsePrefix("10.42.1.0/24"), Port: 51999}
	leases := []lease.Lease{
		leaseWith("host-b", "192.168.77.2", "10.42.2.0/24", a.String()),
		leaseWith("host-c", "192.168.78.3", "10.42.3.0/24", b.String()),
		leaseWith("host-d", "192.168.77.4", "10.42.4.0/24", ""),
		leaseWith("host-e", "192.168.77.5", "10.42.5.0/24", "bm90IGEga2V5"),
		leaseWith("host-f", "192.168.77.6", "10.42.6.0/24", own.String()),
		leaseWith("host-g", "192.168.77.7", "10.42.7.0/24", dup.String()),
		leaseWith("host-h", "192.168.77.8", "10.42.8.0/24", dup.String()),
	}
	want, routes, skips := wantedPeers(n, own, leases)

	got := map[string]peer{}
	for _, p := range want {
		got[p.HostID] = p
	}
	if len(want) != 2 || got["host-b"].Key != a || got["host-c"].Key != b {
		t.Fatalf("peers %+v, want host-b and host-c", want)
	}
	if p := got["host-c"]; p.Endpoint != netip.MustParseAddrPort("192.168.78.3:51999") || p.Subnet != netip.MustParsePrefix("10.42.3.0/24") {
		t.Fatalf("host-c: %+v", p)
	}
	c := got["host-b"].config(true)
	if !c.ReplaceAllowedIPs || c.Remove || len(c.AllowedIPs) != 1 || c.AllowedIPs[0].String() != "10.42.2.0/24" ||
		c.Endpoint.String() != "192.168.77.2:51999" {
		t.Fatalf("config %+v", c)
	}

	why := map[string]string{}
	for _, s := range skips {
		why[s.HostID] = s.Why
	}
	for host, w := range map[string]string{"host-d": "no WireGuard public key", "host-e": "malformed", "host-f": "this host's own public key",
		"host-g": "also in the lease of host [host-h]", "host-h": "also in the lease of host [host-g]"} {
		if !strings.Contains(why[host], w) {
			t.Errorf("%s skipped for %q, want %q", host, why[host], w)
		}
	}
	if len(skips) != 5 {
		t.Errorf("skips %+v", skips)
	}
	var rs []string
	for _, r := range routes {
		rs = append(rs, r.String())
	}
	slices.Sort(rs)
	if wantR := []string{"10.42.2.0/24", "10.42.3.0/24", "10.42.4.0/24", "10.42.5.0/24", "10.42.6.0/24", "10.42.7.0/24", "10.42.8.0/24"}; !slices.Equal(rs, wantR) {
		t.Errorf("routes %v, want %v", rs, wantR)
	}
}

func devicePeer(key wgtypes.Key, endpoint, allowed string) wgtypes.Peer {
	p := wgtypes.Peer{PublicKey: key}
	if endpoint != "" {
		p.Endpoint = net.UDPAddrFromAddrPort(netip.MustParseAddrPort(endpoint))
	}
	if allowed != "" {
		_, ipn, _ := net.ParseCIDR(allowed)
		p.AllowedIPs = []net.IPNet{*ipn}
	}
	return p
}

// The change leaves peers that match alone (their sessions go on), sets
// new and changed ones, and removes the rest; none at all when nothing
// differs.
func TestDiffPeers(t *testing.T) {
	same, moved, grown, gone, added, keyNew := newKey(t), newKey(t), newKey(t), newKey(t), newKey(t), newKey(t)
	have := []wgtypes.Peer{
		devicePeer(same, "192.168.77.2:51820", "10.42.2.0/24"),
		devicePeer(moved, "192.168.77.3:51820", "10.42.3.0/24"),
		devicePeer(grown, "192.168.77.4:51820", "10.42.4.0/24"),
		devicePeer(gone, "192.168.77.5:51820", "10.42.5.0/24"), // its lease went
	}
	p := func(k wgtypes.Key, ep, subnet string) peer {
		return peer{Key: k, Endpoint: netip.MustParseAddrPort(ep), Subnet: netip.MustParsePrefix(subnet)}
	}
	want := []peer{
		p(same, "192.168.77.2:51820", "10.42.2.0/24"),
		p(moved, "192.168.77.33:51820", "10.42.3.0/24"), // new public IP
		p(grown, "192.168.77.4:51820", "10.42.40.0/24"), // another subnet
		p(added, "192.168.77.6:51820", "10.42.6.0/24"),
		p(keyNew, "192.168.77.7:51820", "10.42.7.0/24"),
	}
	change := diffPeers(have, want, nil)
	got := map[wgtypes.Key]wgtypes.PeerConfig{}
	for _, c := range change {
		got[c.PublicKey] = c
	}
	if _, ok := got[same]; ok {
		t.Errorf("an unchanged peer is in the change: %+v", got[same])
	}
	for _, k := range []wgtypes.Key{moved, grown, added, keyNew} {
		if c, ok := got[k]; !ok || c.Remove || !c.ReplaceAllowedIPs {
			t.Errorf("peer %s: %+v (in change %v)", k, c, ok)
		}
	}
	if c := got[gone]; !c.Remove {
		t.Errorf("peer whose lease went: %+v, want removed", c)
	}
	if len(change) != 5 {
		t.Errorf("change %+v", change)
	}
	if c := diffPeers([]wgtypes.Peer{devicePeer(same, "192.168.77.2:51820", "10.42.2.0/24")}, want[:1], nil); len(c) != 0 {
		t.Errorf("nothing differs, change %+v", c)
	}
	// A device that knows no endpoint, or more allowed IPs than asked, is
	// fixed.
	if c := diffPeers([]wgtypes.Peer{devicePeer(same, "", "10.42.2.0/24")}, want[:1], nil); len(c) != 1 {
		t.Errorf("no endpoint: change %+v", c)
	}
	two := devicePeer(same, "192.168.77.2:51820", "10.42.2.0/24")
	two.AllowedIPs = append(two.AllowedIPs, net.IPNet{IP: net.IPv4(10, 42, 9, 0).To4(), Mask: net.CIDRMask(24, 32)})
	if c := diffPeers([]wgtypes.Peer{two}, want[:1], nil); len(c) != 1 || !c[0].ReplaceAllowedIPs {
		t.Errorf("extra allowed IPs: change %+v", c)
	}
	if c := diffPeers(nil, nil, nil); len(c) != 0 {
		t.Errorf("nothing: %+v", c)
	}
}

// A lease claiming (part of) another lease's subnet, as a hostile or
// confused host writing to the store can, must not get that subnet's
// traffic, nor be allowed to send from it: WireGuard would give the
// more specific (or the last configured) peer the addresses. Neither can
// be told to be the right one, so both are skipped (and still routed into
// the device), and the others are unaffected.
func TestOverlappingLeasesSkipped(t *testing.T) {
	own := newKey(t)
	n := overlay.Network{ID: "n", Pool: pool, Subnet: netip.MustParsePrefix("10.42.1.0/24"), Port: 51999}
	leases := []lease.Lease{
		leaseWith("host-b", "192.168.77.2", "10.42.2.0/24", newKey(t).String()),
		leaseWith("host-h", "192.168.77.66", "10.42.2.0/25", newKey(t).String()), // inside host-b's
		leaseWith("host-c", "192.168.77.3", "10.42.3.0/24", newKey(t).String()),
		leaseWith("host-i", "192.168.77.67", "10.42.3.0/24", newKey(t).String()), // host-c's very subnet
		leaseWith("host-d", "192.168.77.4", "10.42.4.0/24", newKey(t).String()),
		leaseWith("host-j", "192.168.77.68", "10.42.8.0/22", newKey(t).String()), // covers host-e's
		leaseWith("host-e", "192.168.77.5", "10.42.9.0/24", ""),                  // skipped anyway
	}
	want, routes, skips := wantedPeers(n, own, leases)
	if len(want) != 1 || want[0].HostID != "host-d" {
		t.Fatalf("peers %+v: want only host-d", want)
	}
	why := map[string]string{}
	for _, s := range skips {
		why[s.HostID] = s.Why
	}
	for _, h := range []string{"host-b", "host-h", "host-c", "host-i", "host-j"} {
		if !strings.Contains(why[h], "overlaps") {
			t.Errorf("%s skipped for %q, want an overlap", h, why[h])
		}
	}
	if len(routes) != len(leases) {
		t.Errorf("routes %v, want every lease's subnet into the device", routes)
	}
}

// A lease naming another host's ID and subnet but with another key (a
// forged copy) is not taken for the same lease listed twice.
func TestForgedLeaseOfAnotherHostSkipped(t *testing.T) {
	own := newKey(t)
	n := overlay.Network{ID: "n", Pool: pool, Subnet: netip.MustParsePrefix("10.42.1.0/24"), Port: 51999}
	real := leaseWith("host-b", "192.168.77.2", "10.42.2.0/24", newKey(t).String())
	forged := leaseWith("host-b", "192.168.77.66", "10.42.2.0/24", newKey(t).String())
	want, _, _ := wantedPeers(n, own, []lease.Lease{real, forged, real})
	if len(want) != 0 {
		t.Fatalf("peers %+v, want none", want)
	}
}

// A malformed key of any size is named in the skip reason (logged at
// every change) only by a bounded prefix.
func TestOversizedKeyBounded(t *testing.T) {
	n := overlay.Network{ID: "n", Pool: pool, Subnet: netip.MustParsePrefix("10.42.1.0/24"), Port: 51999}
	big := strings.Repeat("A", 1<<20)
	_, _, skips := wantedPeers(n, newKey(t), []lease.Lease{leaseWith("host-b", "192.168.77.2", "10.42.2.0/24", big)})
	if len(skips) != 1 || len(skips[0].Why) > 300 || !strings.Contains(skips[0].Why, "malformed") {
		t.Fatalf("%d skips, reason of %d bytes", len(skips), len(skips[0].Why))
	}
}

// An endpoint the device learned (the peer roamed, or is behind a NAT) is
// kept while the peer's lease says what it said when felt set it; a lease
// whose endpoint changed, and a device that knows none, get the lease's.
// Other changes of a roamed peer leave its endpoint out of the change.
func TestDiffPeersKeepsLearnedEndpoint(t *testing.T) {
	roamed, moved, regrown, unknown, lost := newKey(t), newKey(t), newKey(t), newKey(t), newKey(t)
	p := func(k wgtypes.Key, ep, subnet string) peer {
		return peer{Key: k, Endpoint: netip.MustParseAddrPort(ep), Subnet: netip.MustParsePrefix(subnet)}
	}
	have := []wgtypes.Peer{
		devicePeer(roamed, "203.0.113.7:40001", "10.42.2.0/24"),
		devicePeer(moved, "203.0.113.8:40002", "10.42.3.0/24"),
		devicePeer(regrown, "203.0.113.9:40003", "10.42.4.0/24"),
		devicePeer(unknown, "203.0.113.10:40004", "10.42.5.0/24"),
		devicePeer(lost, "", "10.42.6.0/24"),
	}
	want := []peer{
		p(roamed, "192.168.77.2:51820", "10.42.2.0/24"),
		p(moved, "192.168.77.33:51820", "10.42.3.0/24"), // its lease's public IP changed
		p(regrown, "192.168.77.4:51820", "10.42.40.0/24"),
		p(unknown, "192.168.77.5:51820", "10.42.5.0/24"), // set by an earlier felt, or by no one
		p(lost, "192.168.77.6:51820", "10.42.6.0/24"),
	}
	set := map[wgtypes.Key]netip.AddrPort{
		roamed:  netip.MustParseAddrPort("192.168.77.2:51820"),
		moved:   netip.MustParseAddrPort("192.168.77.3:51820"),
		regrown: netip.MustParseAddrPort("192.168.77.4:51820"),
		lost:    netip.MustParseAddrPort("192.168.77.6:51820"),
	}
	got := map[wgtypes.Key]wgtypes.PeerConfig{}
	for _, c := range diffPeers(have, want, set) {
		got[c.PublicKey] = c
	}
	if c, ok := got[roamed]; ok {
		t.Errorf("a roamed peer with an unchanged lease is in the change: %+v", c)
	}
	for k, ep := range map[wgtypes.Key]string{moved: "192.168.77.33:51820", unknown: "192.168.77.5:51820", lost: "192.168.77.6:51820"} {
		if c, ok := got[k]; !ok || c.Endpoint == nil || c.Endpoint.String() != ep {
			t.Errorf("peer %s: %+v (in change %v), want endpoint %s", k, c, ok, ep)
		}
	}
	if c, ok := got[regrown]; !ok || c.Endpoint != nil || len(c.AllowedIPs) != 1 || c.AllowedIPs[0].String() != "10.42.40.0/24" {
		t.Errorf("roamed peer with a new subnet: %+v (in change %v), want its allowed IPs without an endpoint", c, ok)
	}
	if len(got) != 4 {
		t.Errorf("change %+v", got)
	}
}
