package wireguard_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/wireguard"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
	"github.com/felt-net/felt/testkit/testbed"
)

const mtu = 1500 - 80

var dev = wireguard.DeviceName(testbed.Pool)

// newBed is two testbed hosts with the layout the driver makes for
// wireguard (bridge and container MTU 1420), and a felt wireguard backend
// on the first, keeping its key in a state directory. The backend's
// network is torn down when the test ends, before the namespaces go.
func newBed(t *testing.T, stateDir string) (*testbed.Bed, *wireguard.Backend, overlay.Network) {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testkit.Unavailable(t, "no /dev/net/tun: %v", err)
	}
	tb := testbed.New(t, "192.168.77.1", "192.168.77.2")
	for _, h := range tb.Hosts {
		for _, l := range []struct {
			ns   *netns.NS
			name string
		}{{h.NS, testbed.Bridge}, {h.NS, "veth0"}, {h.Ctr, "eth0"}} {
			if err := l.ns.NL.LinkSetMTU(l.ns.Link(t, l.name), mtu); err != nil {
				t.Fatalf("%s: mtu %s: %v", h.ID, l.name, err)
			}
		}
	}
	a := tb.Hosts[0]
	b := newFelt(a, stateDir)
	n := overlay.Network{ID: "net-wg", Pool: testbed.Pool, Subnet: a.Subnet, Bridge: testbed.Bridge, Backend: wireguard.Name, MTU: mtu}
	t.Cleanup(func() {
		if err := b.Teardown(context.Background(), n); err != nil {
			t.Errorf("teardown: %v", err)
		}
		if t.Failed() {
			t.Logf("log of %s:\n%s", a.ID, a.Logs)
		}
	})
	return tb, b, n
}

// newFelt is felt's wireguard backend on h, keeping its key in stateDir.
func newFelt(h *testbed.Host, stateDir string) *wireguard.Backend {
	log := slog.New(slog.NewTextHandler(h.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return wireguard.New(overlay.BackendConfig{Netlink: h.NS.NL, Host: testbed.NSHost{FakeHost: testbed.FakeHost{IP: h.Pub}, NS: h.NS.Handle},
		HostID: h.ID, StateDir: stateDir, Log: log})
}

// peerDevice is a plain wireguard-go device standing for another host's
// felt, configured through IpcSet, without a UAPI socket: felt's would
// have the same name, as both serve the same pool.
type peerDevice struct {
	dev *device.Device
	key wgtypes.Key // its private key
}

// nsBind opens the peer's sockets in its host's namespace.
type nsBind struct {
	conn.Bind
	ns vnetns.NsHandle
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = nsutil.Do(b.ns, func() error {
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	return fns, actual, err
}

// startPeer runs a WireGuard device "wgpeer" on h, with felt's host (pub,
// subnet, key) as its one peer, and routes felt's subnet into it, as felt
// on h would.
func startPeer(t *testing.T, h *testbed.Host, port int, felt wgtypes.Key, feltPub netip.Addr, feltSubnet netip.Prefix) *peerDevice {
	t.Helper()
	var td tun.Device
	if err := h.NS.Do(func() error {
		var err error
		td, err = tun.CreateTUN("wgpeer", mtu)
		return err
	}); err != nil {
		t.Fatalf("%s: peer tun: %v", h.ID, err)
	}
	p := &peerDevice{dev: device.NewDevice(td, &nsBind{Bind: conn.NewDefaultBind(), ns: h.NS.Handle}, device.NewLogger(device.LogLevelSilent, ""))}
	t.Cleanup(p.dev.Close)
	var err error
	if p.key, err = wgtypes.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\npublic_key=%s\nendpoint=%s\nallowed_ip=%s\n",
		hex.EncodeToString(p.key[:]), port, hex.EncodeToString(felt[:]), netip.AddrPortFrom(feltPub, uint16(port)), feltSubnet)
	if err := p.dev.IpcSet(cfg); err != nil {
		t.Fatalf("%s: peer config: %v", h.ID, err)
	}
	l := h.NS.Link(t, "wgpeer")
	h.NS.AddAddr(t, "wgpeer", h.Subnet.Addr().String()+"/32")
	if err := h.NS.NL.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	if err := p.dev.Up(); err != nil {
		t.Fatalf("%s: peer up: %v", h.ID, err)
	}
	r := netlink.Route{Dst: testbed.IPNet(feltSubnet.String()), LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK}
	if err := h.NS.NL.RouteReplace(&r); err != nil {
		t.Fatal(err)
	}
	return p
}

// leaseOf is h's lease publishing key.
func leaseOf(h *testbed.Host, key string) lease.Lease {
	data, _ := json.Marshal(map[string]string{"wgPublicKey": key})
	return lease.Lease{Pool: testbed.Pool, Subnet: h.Subnet, HostID: h.ID, PublicIP: h.Pub, BackendData: data}
}

func status(t *testing.T, b *wireguard.Backend, n overlay.Network) wireguard.Status {
	t.Helper()
	st, ok, err := b.WireGuardStatus(n)
	if !ok || err != nil {
		t.Fatalf("status: set up %v, %v", ok, err)
	}
	return st
}

func ifindex(t *testing.T, h *testbed.Host) int { return h.NS.Link(t, dev).Attrs().Index }

// The backend against a real WireGuard peer, with real packets: device,
// key, port and peer as the contract says; traffic both ways; Setup and
// Sync again keep the device and the peer's session; a lease gone removes
// peer and route; a deleted device is recreated with its peers and routes;
// Teardown removes device, routes and UAPI socket.
func TestWireGuardAgainstAPeer(t *testing.T) {
	tb, b, n := newBed(t, t.TempDir())
	a, c := tb.Hosts[0], tb.Hosts[1]
	ctx := context.Background()
	testbed.MustNotPing(t, a, c)
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	own, err := b.PublicKey()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("device", func(t *testing.T) {
		l := a.NS.Link(t, dev)
		if l.Attrs().MTU != mtu || l.Attrs().Flags&net.FlagUp == 0 {
			t.Fatalf("%s: type %s mtu %d flags %v", dev, l.Type(), l.Attrs().MTU, l.Attrs().Flags)
		}
		if want := overlay.OwnerAlias(a.ID, n.ID); l.Attrs().Alias != want {
			t.Fatalf("%s: alias %q, want the owner mark %q", dev, l.Attrs().Alias, want)
		}
		addrs, err := a.NS.NL.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.42.1.0/32" {
			t.Fatalf("addresses %v (%v), want only 10.42.1.0/32", addrs, err)
		}
		st := status(t, b, n)
		if st.PublicKey != own.String() || st.ListenPort != wireguard.DefaultPort || st.Device != dev || len(st.Peers) != 0 {
			t.Fatalf("status %+v, want key %s, port %d, no peers", st, own, wireguard.DefaultPort)
		}
		switch st.Implementation {
		case wireguard.ImplUserspace:
			if l.Type() != "tuntap" {
				t.Fatalf("user space device of type %s", l.Type())
			}
			if _, err := os.Stat(wireguard.UAPIDir + "/" + dev + ".sock"); err != nil {
				t.Fatalf("uapi socket: %v", err)
			}
		case wireguard.ImplKernel:
			if l.Type() != "wireguard" {
				t.Fatalf("kernel device of type %s", l.Type())
			}
		default:
			t.Fatalf("implementation %q", st.Implementation)
		}
		t.Logf("implementation: %s", st.Implementation)
	})

	before := ifindex(t, a)
	if err := b.Setup(ctx, n); err != nil {
		t.Fatalf("setup again: %v", err)
	}
	if got := ifindex(t, a); got != before {
		t.Fatalf("setup again replaced the device: ifindex %d, was %d", got, before)
	}

	peer := startPeer(t, c, wireguard.DefaultPort, own, a.Pub, a.Subnet)
	peerPub := peer.key.PublicKey()
	leases := []lease.Lease{leaseOf(c, peerPub.String())}
	if err := b.Sync(ctx, n, leases); err != nil {
		t.Fatal(err)
	}

	t.Run("traffic", func(t *testing.T) {
		r, ok := testbed.FeltRoutes(t, a)[c.Subnet]
		if !ok || r.LinkIndex != ifindex(t, a) || r.Gw != nil {
			t.Fatalf("route %s: %+v (present %v), want dev %s", c.Subnet, r, ok, dev)
		}
		testbed.MustPing(t, a, c)
		testbed.MustPing(t, c, a)
		// This host's own traffic leaves from the device's address.
		if err := a.NS.Ping(c.CtrIP(), 2*time.Second); err != nil {
			t.Fatalf("host a to container on c: %v", err)
		}
		st := status(t, b, n)
		if len(st.Peers) != 1 {
			t.Fatalf("peers %+v", st.Peers)
		}
		p := st.Peers[0]
		if p.PublicKey != peerPub.String() || p.Endpoint != "192.168.77.2:51820" || strings.Join(p.AllowedIPs, ",") != c.Subnet.String() ||
			p.LatestHandshake.IsZero() || p.ReceiveBytes == 0 || p.TransmitBytes == 0 {
			t.Fatalf("peer %+v", p)
		}
	})

	t.Run("sync again keeps the session", func(t *testing.T) {
		hs := status(t, b, n).Peers[0].LatestHandshake
		for range 2 {
			if err := b.Setup(ctx, n); err != nil {
				t.Fatal(err)
			}
			if err := b.Sync(ctx, n, leases); err != nil {
				t.Fatal(err)
			}
		}
		testbed.MustPing(t, a, c)
		// A peer removed and added again would start without a handshake,
		// and make a new one.
		if got := status(t, b, n).Peers[0].LatestHandshake; !got.Equal(hs) {
			t.Fatalf("latest handshake %v, was %v: the session was not kept", got, hs)
		}
	})

	t.Run("unusable keys and public IPs", func(t *testing.T) {
		bad := leaseOf(c, "bm90IGEga2V5")
		bad.HostID, bad.Subnet, bad.PublicIP = "host-z", netip.MustParsePrefix("10.42.9.0/24"), netip.MustParseAddr("192.168.77.9")
		mine := leaseOf(c, own.String())
		mine.HostID, mine.Subnet, mine.PublicIP = "host-y", netip.MustParsePrefix("10.42.8.0/24"), netip.MustParseAddr("192.168.77.8")
		for range 2 {
			if err := b.Sync(ctx, n, append([]lease.Lease{bad, mine}, leases...)); err != nil {
				t.Fatal(err)
			}
		}
		st := status(t, b, n)
		if len(st.Peers) != 1 || st.Peers[0].PublicKey != peerPub.String() {
			t.Fatalf("peers %+v, want only the good one", st.Peers)
		}
		routes := testbed.FeltRoutes(t, a)
		for _, s := range []string{"10.42.9.0/24", "10.42.8.0/24"} {
			if r, ok := routes[netip.MustParsePrefix(s)]; !ok || r.LinkIndex != ifindex(t, a) {
				t.Errorf("no route %s into the device (its traffic is dropped there)", s)
			}
		}
		if got := strings.Count(a.Logs.String(), "peer skipped"); got != 2 {
			t.Errorf("%d skip messages after two syncs, want one per lease", got)
		}
		// A lease whose public IP no peer can have (loopback, say) never
		// reaches Sync: the Manager leaves it out (overlay.CheckPeer). Its
		// subnet, routed nowhere, is the pool blackhole's, which drops it
		// rather than letting it leave by the default route in clear.
		if _, ok := routes[netip.MustParsePrefix("10.42.7.0/24")]; ok {
			t.Errorf("route to 10.42.7.0/24, which no lease holds")
		}
		if got := count(poolRoutes(t, a), unix.RTN_BLACKHOLE, overlay.RouteProtocol); got != 1 {
			t.Errorf("%d blackholes of the pool, want 1: %+v", got, poolRoutes(t, a))
		}
		testbed.MustPing(t, a, c)
	})

	t.Run("lease gone", func(t *testing.T) {
		if err := b.Sync(ctx, n, nil); err != nil {
			t.Fatal(err)
		}
		if st := status(t, b, n); len(st.Peers) != 0 {
			t.Fatalf("peers %+v, want none", st.Peers)
		}
		if r, ok := testbed.FeltRoutes(t, a)[c.Subnet]; ok {
			t.Fatalf("route %+v left", r)
		}
		testbed.MustNotPing(t, a, c)
		if err := b.Sync(ctx, n, leases); err != nil {
			t.Fatal(err)
		}
		testbed.MustPing(t, a, c)
	})

	t.Run("device deleted", func(t *testing.T) {
		old := ifindex(t, a)
		if err := a.NS.NL.LinkDel(a.NS.Link(t, dev)); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, "the device's route gone", func() bool { _, ok := testbed.FeltRoutes(t, a)[c.Subnet]; return !ok })
		// Setup alone brings the data path back: the peers and routes of
		// the last Sync come along.
		if err := b.Setup(ctx, n); err != nil {
			t.Fatal(err)
		}
		if ifindex(t, a) == old {
			t.Fatal("device not recreated")
		}
		testbed.MustPing(t, a, c)
		testbed.MustPing(t, c, a)
	})

	t.Run("teardown", func(t *testing.T) {
		for i := range 2 { // idempotent
			if err := b.Teardown(ctx, n); err != nil {
				t.Fatalf("teardown %d: %v", i, err)
			}
		}
		if _, err := a.NS.NL.LinkByName(dev); err == nil {
			t.Fatal("device left")
		}
		if rs := testbed.FeltRoutes(t, a); len(rs) != 0 {
			t.Fatalf("routes left: %v", rs)
		}
		if _, err := os.Lstat(wireguard.UAPIDir + "/" + dev + ".sock"); !os.IsNotExist(err) {
			t.Fatalf("uapi socket left: %v", err)
		}
		if _, ok, _ := b.WireGuardStatus(n); ok {
			t.Fatal("status after teardown")
		}
	})
}

// A restarted felt (a new backend on the same state directory) has the same
// key, so its peers need no change; it replaces the UAPI socket its
// predecessor left, prunes the routes it left, and traffic resumes.
func TestRestartRecreates(t *testing.T) {
	dir := t.TempDir()
	tb, b, n := newBed(t, dir)
	a, c := tb.Hosts[0], tb.Hosts[1]
	ctx := context.Background()
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	own, _ := b.PublicKey()
	peer := startPeer(t, c, wireguard.DefaultPort, own, a.Pub, a.Subnet)
	leases := []lease.Lease{leaseOf(c, peer.key.PublicKey().String())}
	if err := b.Sync(ctx, n, leases); err != nil {
		t.Fatal(err)
	}
	testbed.MustPing(t, a, c)

	// What a felt killed with its TUN open leaves: its UAPI socket file
	// (no one listening), and routes of a device that is gone (here: a
	// route of felt's into the pool on lo).
	if err := b.Teardown(ctx, n); err != nil {
		t.Fatal(err)
	}
	sock := wireguard.UAPIDir + "/" + dev + ".sock"
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	stale := netlink.Route{Dst: testbed.IPNet("10.42.9.0/24"), LinkIndex: a.NS.Link(t, "lo").Attrs().Index, Protocol: overlay.RouteProtocol}
	if err := a.NS.NL.RouteAdd(&stale); err != nil {
		t.Fatal(err)
	}

	again := newFelt(a, dir)
	t.Cleanup(func() {
		if err := again.Teardown(context.Background(), n); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	if key, _ := again.PublicKey(); key != own {
		t.Fatalf("public key %s after the restart, was %s", key, own)
	}
	if err := again.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := again.Sync(ctx, n, leases); err != nil {
		t.Fatal(err)
	}
	if _, ok := testbed.FeltRoutes(t, a)[netip.MustParsePrefix("10.42.9.0/24")]; ok {
		t.Fatal("stale route left")
	}
	testbed.MustPing(t, a, c)
	testbed.MustPing(t, c, a)
}
