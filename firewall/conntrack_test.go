package firewall_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit/netns"
)

// udpConn opens a UDP socket on addr (port 0: any) inside ns; it stays in
// ns whatever goroutine uses it.
func udpConn(t *testing.T, ns *netns.NS, addr string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	if err := ns.Do(func() error {
		var err error
		c, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends msg from a to b and reports whether b received it,
// waiting up to wait.
func exchange(t *testing.T, a, b net.PacketConn, msg string, wait time.Duration) bool {
	t.Helper()
	if _, err := a.WriteTo([]byte(msg), b.LocalAddr()); err != nil {
		t.Logf("send %q: %v", msg, err) // an ICMP error from a drop: not received
	}
	buf := make([]byte, 64)
	deadline := time.Now().Add(wait)
	for {
		if err := b.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		n, _, err := b.ReadFrom(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == msg {
			return true
		}
	}
}

// A flow between two felt networks that was established before felt's
// rules were in place (felt starting after the containers, or a moment
// when someone had flushed them) is cut as soon as they are: the drops
// match every packet, not only a connection's first, so an ACCEPT of
// established traffic in filter FORWARD (as Docker has for its bridges,
// here one for all traffic, first) cannot carry the flow on. Red and blue
// talk from their felt addresses through docker_gwbridge (their default
// route), the way between two felt networks Docker's rules accept.
func TestEstablishedFlowCut(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		l := newLab(t)
		d := docker{l: l, t: t, path: path}
		d.start20()
		d.gwbridge20()
		d.run("-I", "FORWARD", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
		red := udpConn(t, l.red, netip.AddrPortFrom(redIP, 0).String())
		blue := udpConn(t, l.blue, netip.AddrPortFrom(blueIP, 0).String())
		// Both ways, so that conntrack sees the flow as established.
		if !exchange(t, red, blue, "request 1", 10*time.Second) || !exchange(t, blue, red, "reply 1", 10*time.Second) {
			t.Fatalf("no flow between red and blue before felt's rules (test broken?)\n%s", l.save(t, path, "filter"))
		}
		mustSync(t, newFirewall(t, l.host, path, "inst0001"), redNet, blueNet)
		if exchange(t, red, blue, "request 2", 2*time.Second) {
			t.Error("red's established flow still reaches blue after felt's rules are in place")
		}
		if exchange(t, blue, red, "reply 2", 2*time.Second) {
			t.Error("blue's replies still reach red after felt's rules are in place")
		}
	})
}
