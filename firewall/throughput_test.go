package firewall_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/testkit/netns"
)

// fakeNetworks are n felt networks (bridges need not exist: rules and set
// entries name interfaces, they do not need them), each with a /20 pool:
// 10.(i/16).((i%16)*16).0/20.
func fakeNetworks(n int) []firewall.Network {
	nets := make([]firewall.Network, n)
	for i := range nets {
		a := netip.AddrFrom4([4]byte{10, byte(i / 16), byte(i % 16 * 16), 0})
		nets[i] = firewall.Network{Bridge: fmt.Sprintf("felt-b%d", i), Pool: netip.PrefixFrom(a, 20)}
	}
	return nets
}

// Issue 14: the per-packet cost of felt's rules must not grow with the
// number of networks. One TCP stream of one felt network (the last of n,
// the worst place in any list) through a router namespace holding felt's
// rules: from a container on the network's bridge (a veth named as the
// bridge) to another host's subnet of its pool (a veth standing for the
// overlay device), so that the packets are the pool's own and pass both
// chains. Reports MB/s; compare n=1 with n=500:
//
//	go test ./firewall -run '^$' -bench ForwardThroughput -benchtime 3s
func BenchmarkForwardThroughput(b *testing.B) {
	for _, path := range flavours(b) {
		for _, n := range []int{1, 200, 500} {
			b.Run(fmt.Sprintf("%s/networks=%d", shortName(path), n), func(b *testing.B) {
				forwardStream(b, path, n)
			})
		}
	}
}

func forwardStream(b *testing.B, path string, n int) {
	nets := fakeNetworks(n)
	last := nets[n-1]
	base := last.Pool.Addr().As4()
	addr := func(subnet, host byte) string {
		return netip.AddrFrom4([4]byte{base[0], base[1], base[2] + subnet, host}).String()
	}
	router, ctr, peer := netns.New(b, "rt"), netns.New(b, "ctr"), netns.New(b, "peer")
	router.Sysctl(b, "net.ipv4.ip_forward", "1")
	netns.Veth(b, router, last.Bridge, ctr, "eth0")
	netns.Veth(b, router, "rpeer", peer, "eth0")
	router.AddAddr(b, last.Bridge, addr(0, 1)+"/24")
	router.AddAddr(b, "rpeer", addr(1, 1)+"/24")
	ctr.AddAddr(b, "eth0", addr(0, 2)+"/24")
	peer.AddAddr(b, "eth0", addr(1, 2)+"/24")
	ctr.AddRoute(b, last.Pool.String(), netip.MustParseAddr(addr(0, 1)))
	peer.AddRoute(b, last.Pool.String(), netip.MustParseAddr(addr(1, 1)))
	fw := newFirewall(b, router, path, "inst0001")
	if err := fw.Sync(nets); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := fw.Remove(); err != nil {
			b.Error(err)
		}
	})

	var ln net.Listener
	if err := peer.Do(func() (err error) { ln, err = net.Listen("tcp4", addr(1, 2)+":0"); return err }); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, err = io.Copy(io.Discard, c)
			c.Close()
		}
		got <- err
	}()
	var c net.Conn
	if err := ctr.Do(func() (err error) { c, err = net.Dial("tcp4", ln.Addr().String()); return err }); err != nil {
		b.Fatalf("no stream through felt's rules: %v", err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	// The CPU time of this process (sender, receiver and the kernel's
	// forwarding, which runs mostly in the sender's system calls) per MB
	// is a steadier measure than the throughput on a shared machine, where
	// other work takes the CPU for some runs and not others.
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if err := <-got; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/MB")
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
