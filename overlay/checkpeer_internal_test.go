package overlay

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/felt-net/felt/lease"
)

// CheckPeer's integer shortcut (accepted) agrees with its checks: it
// accepts exactly the IPv4 leases they accept, over random pools, subnets
// and public IPs drawn to hit each check's edges.
func TestCheckPeerShortcutAgrees(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	addr := func() netip.Addr {
		// Mostly near the edges the checks draw: 0/8, 127/8, 224/4,
		// 255.255.255.255, the pool (10.42/16), anything.
		firsts := []byte{0, 1, 10, 10, 10, 126, 127, 128, 172, 192, 223, 224, 239, 240, 255}
		b := [4]byte{firsts[r.IntN(len(firsts))], byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}
		if b[0] == 10 && r.IntN(2) == 0 {
			b[1] = 42
		}
		if b[0] == 255 && r.IntN(2) == 0 {
			b = [4]byte{255, 255, 255, 255}
		}
		return netip.AddrFrom4(b)
	}
	prefix := func(min, max int) netip.Prefix {
		p := netip.PrefixFrom(addr(), min+r.IntN(max-min+1))
		if r.IntN(4) != 0 {
			p = p.Masked()
		}
		return p
	}
	agreed, accepts := 0, 0
	for range 200000 {
		n := Network{Pool: netip.MustParsePrefix("10.42.0.0/16"), Subnet: netip.MustParsePrefix("10.42.1.0/24")}
		switch r.IntN(4) {
		case 0:
			n.Pool = prefix(0, 32)
		case 1:
			n.Subnet = netip.Prefix{}
		case 2:
			n.Subnet = prefix(8, 32)
		}
		l := lease.Lease{HostID: "h", Subnet: prefix(8, 32), PublicIP: addr()}
		switch r.IntN(6) {
		case 0:
			l.PublicIP = netip.Addr{}
		case 1:
			l.Subnet = netip.Prefix{}
		case 2:
			l.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(r.IntN(4)), 0}), 22+r.IntN(11))
		}
		fast, slow := accepted(&n, &l), checkPeer(n, l) == nil
		if fast != slow {
			t.Fatalf("pool %s, subnet %s, lease %s at %s: shortcut %v, checks %v (%v)", n.Pool, n.Subnet, l.Subnet, l.PublicIP, fast, slow, checkPeer(n, l))
		}
		agreed++
		if slow {
			accepts++
		}
	}
	if accepts < agreed/20 {
		t.Fatalf("only %d of %d leases accepted: the draw misses the common case", accepts, agreed)
	}
}

func BenchmarkCheckPeer(b *testing.B) {
	n := Network{Pool: netip.MustParsePrefix("10.128.0.0/9"), Subnet: netip.MustParsePrefix("10.128.1.0/24")}
	l := lease.Lease{Pool: n.Pool, Subnet: netip.MustParsePrefix("10.130.5.0/24"), PublicIP: netip.MustParseAddr("172.16.3.4"), HostID: "x"}
	for range b.N {
		if CheckPeer(n, l) != nil {
			b.Fatal("refused")
		}
	}
}
