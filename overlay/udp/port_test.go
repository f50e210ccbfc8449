package udp_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/udp"
	"github.com/felt-net/felt/testkit/netns"
	"github.com/felt-net/felt/testkit/testbed"
)

func TestUDPSharedPort(t *testing.T) {
	// Two udp networks on the default port: one socket per host carries
	// both, each packet to its own network's TUN.
	tb := newUDPTestbed(t, "192.168.77.1", "192.168.78.2")
	a, b := tb.Hosts[0], tb.Hosts[1]
	pool2 := netip.MustParsePrefix("10.43.0.0/16")
	type second struct {
		ctr    *netns.NS
		subnet netip.Prefix
		n      overlay.Network
	}
	var nets []second
	for i, h := range tb.Hosts {
		s := second{subnet: netip.MustParsePrefix(fmt.Sprintf("10.43.%d.0/24", i+1))}
		gw := s.subnet.Addr().Next()
		h.NS.Bridge(t, "br-two")
		h.NS.AddAddr(t, "br-two", gw.String()+"/24")
		s.ctr = netns.New(t, h.ID+"-two")
		netns.Veth(t, h.NS, "veth1", s.ctr, "eth0")
		h.NS.SetMaster(t, "veth1", "br-two")
		s.ctr.AddAddr(t, "eth0", gw.Next().String()+"/24")
		s.ctr.AddRoute(t, pool2.String(), gw)
		s.n = overlay.Network{ID: "net-two", Pool: pool2, Subnet: s.subnet, Bridge: "br-two", Backend: "udp", MTU: 1472}
		nets = append(nets, s)
		t.Cleanup(func() { _ = h.B["udp"].Teardown(context.Background(), s.n) })
	}
	tb.ApplyAll(t, "udp", false)
	for i, h := range tb.Hosts {
		o := nets[1-i]
		peer := lease.Lease{Pool: pool2, Subnet: o.subnet, HostID: tb.Hosts[1-i].ID, PublicIP: tb.Hosts[1-i].Pub}
		ctx := context.Background()
		if err := h.B["udp"].Setup(ctx, nets[i].n); err != nil {
			t.Fatal(err)
		}
		if err := h.B["udp"].Sync(ctx, nets[i].n, []lease.Lease{peer}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.NS.NL.LinkByName(udp.DeviceName(pool2)); err != nil {
		t.Fatalf("second TUN: %v", err)
	}
	ping2 := func(from, to second) error {
		var err error
		for range 5 {
			if err = from.ctr.Ping(to.subnet.Addr().Next().Next(), time.Second); err == nil {
				return nil
			}
		}
		return err
	}
	testbed.MustPing(t, a, b)
	testbed.MustPing(t, b, a)
	if err := ping2(nets[0], nets[1]); err != nil {
		t.Fatalf("second network a -> b: %v", err)
	}
	if err := ping2(nets[1], nets[0]); err != nil {
		t.Fatalf("second network b -> a: %v", err)
	}
	s1, s2 := udpStats(t, a, a.Network("udp", false)), udpStats(t, a, nets[0].n)
	if s1.RxPackets == 0 || s2.RxPackets == 0 {
		t.Fatalf("each network should have received: first %+v, second %+v", s1, s2)
	}

	// Tearing one down leaves the shared socket to the other.
	if err := a.B["udp"].Teardown(context.Background(), a.Network("udp", false)); err != nil {
		t.Fatal(err)
	}
	testbed.MustNotPing(t, a, b)
	if err := ping2(nets[0], nets[1]); err != nil {
		t.Fatalf("second network after the first's teardown: %v", err)
	}
	if err := a.B["udp"].Teardown(context.Background(), nets[0].n); err != nil {
		t.Fatal(err)
	}
	if err := ping2(nets[0], nets[1]); err == nil {
		t.Fatal("second network still works after its teardown")
	}
	for _, name := range []string{udpDev, udp.DeviceName(pool2)} {
		if _, err := a.NS.NL.LinkByName(name); err == nil {
			t.Fatalf("%s remains after Teardown", name)
		}
	}
	portFree(t, a.NS, udp.DefaultPort)
}
