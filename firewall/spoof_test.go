package firewall_test

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// A container that forges its source address (CAP_NET_RAW, which Docker
// grants by default, is enough) to one in red's pool must not get packets
// into red: not from blue's felt bridge, not through docker_gwbridge (every
// felt container's default route), not from Docker's default bridge. The
// forged packets look like red's own traffic (source and destination in
// red's pool), which felt lets through, so what marks them is the
// interface they come in on. The lab gives the forging namespaces the
// forged address instead of sending raw packets: the same packets.
func TestForgedPoolSourceDropped(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		l := newLab(t)
		d := docker{l: l, t: t, path: path}
		d.start20()
		mustSync(t, newFirewall(t, l.host, path, "inst0001"), redNet, blueNet)
		d.gwbridge20()
		red := udpConn(t, l.red, netip.AddrPortFrom(redIP, 0).String())
		// blue through docker_gwbridge (its default route)
		l.blue.AddAddr(t, "eth1", "10.1.9.9/32")
		viaGw := udpConn(t, l.blue, "10.1.9.9:0")
		// blue through its felt bridge: only what comes from the forged
		// address is routed there
		l.blue.AddAddr(t, "eth0", "10.1.9.8/32")
		l.blue.MustRun(t, "ip", "rule", "add", "from", "10.1.9.8", "table", "100")
		l.blue.MustRun(t, "ip", "route", "add", redIP.String()+"/32", "via", "10.2.1.1", "dev", "eth0", "table", "100")
		viaFelt := udpConn(t, l.blue, "10.1.9.8:0")
		// a container on Docker's default bridge
		l.dk.AddAddr(t, "eth0", "10.1.9.7/32")
		viaDocker0 := udpConn(t, l.dk, "10.1.9.7:0")
		for what, from := range map[string]net.PacketConn{
			"blue through docker_gwbridge":      viaGw,
			"blue through its felt bridge":      viaFelt,
			"Docker's default bridge (docker0)": viaDocker0,
		} {
			if exchange(t, from, red, "forged from "+what, 2*time.Second) {
				t.Errorf("%s, with a source in red's pool, reached red", what)
			}
		}
		l.check(t, true) // red's own traffic still flows, the rest is dropped
		if t.Failed() {
			t.Logf("mangle table:\n%s", l.save(t, path, "mangle"))
		}
	})
}

// A container must not send with a source outside its network's pool even
// to its own pool (on another host, through the overlay device): the
// packet is the anti-spoofing drop's alone (the destination is red's own),
// so the filter table is opened up with an ACCEPT above felt's chain, as
// Docker puts its own, to show that the isolation chain drops it. The
// forged sources: one in blue's pool and one outside every pool.
func TestForgedSourceToOwnPoolDropped(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		l := newLab(t)
		d := docker{l: l, t: t, path: path}
		d.start20()
		mustSync(t, newFirewall(t, l.host, path, "inst0001"), redNet, blueNet)
		d.run("-I", "FORWARD", "-i", "felt-red", "-j", "ACCEPT")
		peer := udpConn(t, l.redPeer, netip.AddrPortFrom(peerIP, 0).String())
		own := udpConn(t, l.redgw, netip.AddrPortFrom(redGwIP, 0).String())
		if !exchange(t, own, peer, "from redgw's own address", 5*time.Second) {
			t.Fatal("redgw's own traffic to its pool on another host dropped (test broken?)")
		}
		for _, forged := range []string{"10.2.9.9", "172.17.0.9"} {
			l.redgw.AddAddr(t, "eth0", forged+"/32")
			from := udpConn(t, l.redgw, forged+":0")
			if exchange(t, from, peer, "forged from "+forged, 2*time.Second) {
				t.Errorf("redgw, with source %s (not red's), reached red's pool on another host", forged)
			}
		}
	})
}
