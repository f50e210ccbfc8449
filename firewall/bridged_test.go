package firewall_test

import (
	"context"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
)

// With br_netfilter active (Docker loads it and sets
// bridge-nf-call-iptables=1), frames bridged between two ports of a felt
// bridge pass through iptables FORWARD as `-i BRIDGE -o BRIDGE`. Broadcast
// to 255.255.255.255 and multicast (mDNS's 224.0.0.251) between two
// containers of one felt network must still arrive: the destination is
// outside the pool, but the traffic never leaves the bridge. And the
// isolation between networks must hold with br_netfilter on as off.
func TestBridgedBroadcastAndMulticastPass(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		l := newLab(t)
		brnf := "/proc/sys/net/bridge/bridge-nf-call-iptables"
		if err := l.host.Do(func() error { _, err := os.Stat(brnf); return err }); err != nil {
			testkit.Unavailable(t, "no br_netfilter in the test namespace (modprobe br_netfilter): %v", err)
		}
		l.host.Sysctl(t, "net.bridge.bridge-nf-call-iptables", "1")
		d := docker{l: l, t: t, path: path}
		d.start20() // FORWARD policy DROP, as Docker sets it
		mustSync(t, newFirewall(t, l.host, path, "inst0001"), redNet, blueNet)
		d.gwbridge20()

		// red listens on eth0 (its felt bridge port) for both;
		// redgw's default route is the felt bridge, so both go out
		// its eth0.
		const port = "5353"
		bcastIn := udpConn(t, l.red, "0.0.0.0:"+port)
		var mcastIn *net.UDPConn
		if err := l.red.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			mcastIn, err = net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5354})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mcastIn.Close() })
		out := broadcastConn(t, l.redgw)

		for _, c := range []struct {
			what string
			to   *net.UDPAddr
			in   net.PacketConn
		}{
			{"broadcast to 255.255.255.255", &net.UDPAddr{IP: net.IPv4bcast, Port: 5353}, bcastIn},
			{"multicast to 224.0.0.251 (mDNS)", &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5354}, mcastIn},
		} {
			if !sendUntil(t, out, c.to, c.in, c.what) {
				t.Errorf("%s from redgw did not reach red on the same felt bridge (br_netfilter on)\n%s", c.what, l.save(t, path, "mangle")+l.save(t, path, "filter"))
			}
		}
		l.check(t, true) // isolation between networks holds with br_netfilter
	})
}

// broadcastConn is a UDP socket in ns allowed to send broadcasts.
func broadcastConn(t *testing.T, ns *netns.NS) net.PacketConn {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	var c net.PacketConn
	if err := ns.Do(func() error {
		var err error
		c, err = lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendUntil sends msg to `to` from out a few times (the first may go while
// neighbours settle) and reports whether in received it.
func sendUntil(t *testing.T, out net.PacketConn, to net.Addr, in net.PacketConn, msg string) bool {
	t.Helper()
	buf := make([]byte, 64)
	for range 5 {
		if _, err := out.WriteTo([]byte(msg), to); err != nil {
			t.Logf("send %q: %v", msg, err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			if err := in.SetReadDeadline(deadline); err != nil {
				t.Fatal(err)
			}
			n, _, err := in.ReadFrom(buf)
			if err != nil {
				break
			}
			if string(buf[:n]) == msg {
				return true
			}
		}
	}
	return false
}
