package wireguard_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/wireguard"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
	"github.com/felt-net/felt/testkit/testbed"
)

// oneHost is a namespace with a felt wireguard backend in mode, whose
// kernel answers kernelErr to creating a WireGuard device (counted in
// *calls), and a network on the testbed's pool.
func oneHost(t *testing.T, mode string, kernelErr error, calls *int) (*netns.NS, *wireguard.Backend, overlay.Network, *testkit.LogBuffer) {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testkit.Unavailable(t, "no /dev/net/tun: %v", err)
	}
	ns := netns.New(t, "wg")
	logs := &testkit.LogBuffer{}
	b := wireguard.New(overlay.BackendConfig{Netlink: ns.NL, Host: testbed.NSHost{FakeHost: testbed.FakeHost{IP: netip.MustParseAddr("192.168.77.1")}, NS: ns.Handle},
		HostID: "host-a", WireGuard: mode, Log: slog.New(slog.NewTextHandler(logs, nil))})
	wireguard.SetKernelLink(b, func(string, int) error { *calls++; return kernelErr })
	n := overlay.Network{ID: "net-wg", Pool: testbed.Pool, Subnet: netip.MustParsePrefix("10.42.1.0/24"), Backend: wireguard.Name, MTU: mtu}
	t.Cleanup(func() {
		if err := b.Teardown(context.Background(), n); err != nil {
			t.Errorf("teardown: %v", err)
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	})
	return ns, b, n, logs
}

// auto falls back to wireguard-go when the kernel does not know the
// WireGuard device type, says so once, and does not ask again while the
// device runs; kernel fails with a clear error instead and leaves nothing;
// other kernel errors are not hidden behind user space; userspace never
// asks.
func TestKernelFallback(t *testing.T) {
	noModule := fmt.Errorf("netlink: %w", unix.EOPNOTSUPP)
	t.Run("auto", func(t *testing.T) {
		calls := 0
		_, b, n, logs := oneHost(t, wireguard.ModeAuto, noModule, &calls)
		for range 3 {
			if err := b.Setup(context.Background(), n); err != nil {
				t.Fatal(err)
			}
		}
		if st, _, _ := b.WireGuardStatus(n); st.Implementation != wireguard.ImplUserspace {
			t.Fatalf("implementation %q", st.Implementation)
		}
		if calls != 1 {
			t.Fatalf("kernel asked %d times, want once", calls)
		}
		if got := strings.Count(logs.String(), "wireguard: kernel module not available, using wireguard-go in user space"); got != 1 {
			t.Fatalf("%d fallback messages, want 1:\n%s", got, logs)
		}
	})
	t.Run("kernel", func(t *testing.T) {
		calls := 0
		ns, b, n, _ := oneHost(t, wireguard.ModeKernel, noModule, &calls)
		err := b.Setup(context.Background(), n)
		if err == nil || !strings.Contains(err.Error(), "FELT_WIREGUARD=kernel, but this kernel has no WireGuard") {
			t.Fatalf("setup: %v", err)
		}
		if _, err := ns.NL.LinkByName(dev); err == nil {
			t.Fatal("a device was made")
		}
		if _, ok, _ := b.WireGuardStatus(n); ok {
			t.Fatal("status reports a device")
		}
	})
	t.Run("auto, other error", func(t *testing.T) {
		calls := 0
		ns, b, n, _ := oneHost(t, wireguard.ModeAuto, unix.EPERM, &calls)
		if err := b.Setup(context.Background(), n); err == nil || !strings.Contains(err.Error(), "operation not permitted") {
			t.Fatalf("setup: %v", err)
		}
		if _, err := ns.NL.LinkByName(dev); err == nil {
			t.Fatal("a device was made")
		}
	})
	t.Run("userspace", func(t *testing.T) {
		calls := 0
		_, b, n, logs := oneHost(t, wireguard.ModeUserspace, nil, &calls)
		if err := b.Setup(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		if st, _, _ := b.WireGuardStatus(n); st.Implementation != wireguard.ImplUserspace || calls != 0 {
			t.Fatalf("implementation %q, kernel asked %d times", st.Implementation, calls)
		}
		if !strings.Contains(logs.String(), "using wireguard-go in user space (FELT_WIREGUARD=userspace)") {
			t.Fatalf("log:\n%s", logs)
		}
	})
}

// One port is one network's: a second network on it is refused, naming
// -o port and the network holding it; on a port of its own it runs.
func TestPortPerNetwork(t *testing.T) {
	calls := 0
	ns, b, n, _ := oneHost(t, wireguard.ModeAuto, unix.EOPNOTSUPP, &calls)
	ctx := context.Background()
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	other := overlay.Network{ID: "net-other", Pool: netip.MustParsePrefix("10.43.0.0/16"), Subnet: netip.MustParsePrefix("10.43.1.0/24"),
		Backend: wireguard.Name, MTU: mtu}
	t.Cleanup(func() {
		if err := b.Teardown(context.Background(), other); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	err := b.Setup(ctx, other)
	if err == nil || !strings.Contains(err.Error(), "-o port") || !strings.Contains(err.Error(), n.ID) || !strings.Contains(err.Error(), "51820") {
		t.Fatalf("second network on port 51820: %v", err)
	}
	if _, err := ns.NL.LinkByName(wireguard.DeviceName(other.Pool)); err == nil {
		t.Fatal("the refused network got a device")
	}
	other.Port = 51821
	if err := b.Setup(ctx, other); err != nil {
		t.Fatalf("on its own port: %v", err)
	}
	st, _, _ := b.WireGuardStatus(other)
	if st.ListenPort != 51821 {
		t.Fatalf("listen port %d", st.ListenPort)
	}
	// The port is WireGuard's: something else on it is reported.
	if err := b.Teardown(ctx, other); err != nil {
		t.Fatal(err)
	}
	var l net.PacketConn
	if err := ns.Do(func() error {
		var err error
		l, err = net.ListenPacket("udp4", ":51822")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	other.Port = 51822
	if err := b.Setup(ctx, other); err == nil || !strings.Contains(err.Error(), "51822") {
		t.Fatalf("setup on a port in use: %v", err)
	}
}
