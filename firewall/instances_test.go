package firewall_test

import (
	"net/netip"
	"testing"
	"time"
)

// Two felt instances in one namespace (two plugins on one engine), red
// being the first's network and blue the second's: the isolation holds as
// with one, and a container of one instance's bridge that forges a source
// in the other's pool does not get in. The rules that match any felt
// bridge (`-i felt-+`) look the packet up in every instance's networks
// (the list of their sets), so neither instance drops the other's own
// traffic nor lets through what it forges.
func TestTwoInstancesIsolated(t *testing.T) {
	eachFlavour(t, func(t *testing.T, path string) {
		l := newLab(t)
		d := docker{l: l, t: t, path: path}
		d.start20()
		a, b := newFirewall(t, l.host, path, "inst000a"), newFirewall(t, l.host, path, "inst000b")
		mustSync(t, a, redNet)
		mustSync(t, b, blueNet)
		d.gwbridge20()
		l.check(t, true)
		red := udpConn(t, l.red, netip.AddrPortFrom(redIP, 0).String())
		// blue through its felt bridge, with a source in red's pool
		l.blue.AddAddr(t, "eth0", "10.1.9.8/32")
		l.blue.MustRun(t, "ip", "rule", "add", "from", "10.1.9.8", "table", "100")
		l.blue.MustRun(t, "ip", "route", "add", redIP.String()+"/32", "via", "10.2.1.1", "dev", "eth0", "table", "100")
		viaFelt := udpConn(t, l.blue, "10.1.9.8:0")
		if exchange(t, viaFelt, red, "forged from blue's bridge", 2*time.Second) {
			t.Error("blue (the other instance's network), with a source in red's pool, reached red through its felt bridge")
		}
		// and red's own traffic to the other host still passes with
		// both instances' rules (each instance's drops leave the other's
		// pools alone)
		peer := udpConn(t, l.redPeer, netip.AddrPortFrom(peerIP, 0).String())
		if !exchange(t, red, peer, "red to its peer", 5*time.Second) {
			t.Error("red's own traffic to its pool on another host dropped with two instances")
		}
		if err := a.Remove(); err != nil {
			t.Fatal(err)
		}
		// blue, alone now, is still isolated: what is left of the list
		// and the rules of b hold without a's
		if err := l.dk.Ping(blueIP, 1500*time.Millisecond); err == nil {
			t.Error("the plain Docker bridge reached blue after the other instance was removed")
		}
		if err := b.Remove(); err != nil {
			t.Fatal(err)
		}
		if left := dumpSets(t, l.host); left != "" {
			t.Errorf("sets left after both instances went:\n%s", left)
		}
	})
}
