package driver

import (
	"net/netip"
	"strings"
	"testing"

	api "github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"
)

// createOn sends the CreateNetwork of netID for a pool felt's IPAM leased.
func (e *env) createOn(t *testing.T, netID, pool string) (testNet, error) {
	t.Helper()
	p, err := e.ipam.RequestPool(ctx, ipamPool(pool))
	must(t, err)
	n := testNet{ID: netID, PoolID: p.PoolID, Subnet: netip.MustParsePrefix(p.Pool), Gateway: p.Data["com.docker.network.gateway"]}
	return n, e.d.CreateNetwork(ctx, &api.CreateNetworkRequest{NetworkID: netID,
		IPv4Data: []*api.IPAMData{{Pool: p.Pool, Gateway: n.Gateway}}})
}

// A bridge without an alias named as felt names a network's bridge is
// taken for a leftover of a crash between creating the bridge and marking
// it only when it looks like one: no address but the network's gateway,
// no ports. A stranger's bridge of that name (Docker's bridge driver with
// -o com.docker.network.bridge.name, a VM bridge) holding other addresses
// or ports was adopted: felt put its gateway beside them, joined its
// network to theirs, and deleted the bridge with the network.
func TestStrangersUnaliasedBridgeNotAdopted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, e *env, br string)
	}{
		{"foreign address", func(t *testing.T, e *env, br string) { e.host.AddAddr(t, br, "192.168.77.1/24") }},
		{"foreign port", func(t *testing.T, e *env, br string) {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "vm1-port"
			must(t, e.host.NL.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "vm1"}))
			e.host.SetMaster(t, "vm1-port", br)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			netID := id("0123456789", 'a')
			br := BridgeName(netID)
			e.host.Bridge(t, br)
			tc.setup(t, e, br)
			_, err := e.createOn(t, netID, "10.62.0.0/16")
			wantErr(t, err, br, "not felt's")
			l := link(t, e.host, br)
			if l == nil {
				t.Fatal("the stranger's bridge was deleted")
			}
			if l.Attrs().Alias != "" {
				t.Fatalf("the stranger's bridge was marked felt's: alias %q", l.Attrs().Alias)
			}
			addrs, err := e.host.NL.AddrList(l, netlink.FAMILY_V4)
			must(t, err)
			for _, a := range addrs {
				if netip.MustParsePrefix("10.62.0.0/16").Contains(netip.MustParseAddr(a.IP.String())) {
					t.Fatalf("felt's gateway %s was put on the stranger's bridge", a.IPNet)
				}
			}
		})
	}
}

// The leftover of a crash (a bridge of that name, no alias, no address, no
// port) is still taken over, and a bridge holding only the gateway too.
func TestCrashLeftoverBridgeAdopted(t *testing.T) {
	e := newEnv(t)
	netID := id("0123456789", 'a')
	br := BridgeName(netID)
	e.host.Bridge(t, br)
	if _, err := e.createOn(t, netID, "10.63.0.0/16"); err != nil {
		t.Fatalf("a crash leftover refused: %v", err)
	}
	if a := link(t, e.host, br).Attrs().Alias; a != e.d.aliasNetwork()+netID {
		t.Fatalf("alias %q", a)
	}
}

// A CreateNetwork failing after its bridge was made leaves no bridge: one
// whose marking failed (here: an alias longer than the kernel's 255 bytes)
// was left unmarked, which removeNetwork, deleting only marked links, kept.
func TestFailedCreateNetworkLeavesNoUnmarkedBridge(t *testing.T) {
	e := newEnv(t)
	e.d.cfg.Instance = strings.Repeat("i", 240)
	netID := id("0123456789", 'a')
	if _, err := e.createOn(t, netID, "10.68.0.0/16"); err == nil {
		t.Fatal("CreateNetwork with an alias the kernel refuses succeeded")
	}
	if l := link(t, e.host, BridgeName(netID)); l != nil {
		t.Fatalf("bridge %s left behind (alias %q)", BridgeName(netID), l.Attrs().Alias)
	}
}
