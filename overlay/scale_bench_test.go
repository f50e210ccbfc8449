package overlay_test

// Benchmarks of the Manager at scale (issue #14): one network of a real
// VTEP in a test namespace with 1,000 or 10,000 fake peers (no host behind
// them: the kernel entries are what costs), fed by a watch the benchmark
// drives. They report the process's CPU time per operation (cpu-ms/op)
// besides the wall time: a lease change's work includes what its kernel
// events start (a deleted route reconciled the network again before
// felt's delta sync). Run as root:
//
//	go test -run '^$' -bench Scale -benchtime 20x ./overlay/

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/vxlan"
	tbed "github.com/felt-net/felt/testkit/testbed"
)

// scalePool holds 32,768 /24s: room for 10,000 peers.
var scalePool = netip.MustParsePrefix("10.128.0.0/9")

// chanWatch is a LeaseWatch whose answers the benchmark sends.
type chanWatch struct{ ch chan lease.Update }

func (w *chanWatch) SetPools([]netip.Prefix) uint64 { return 1 }
func (w *chanWatch) Next(ctx context.Context) (lease.Update, error) {
	select {
	case u := <-w.ch:
		return u, nil
	case <-ctx.Done():
		return lease.Update{}, ctx.Err()
	}
}

// scalePeer is fake peer i's lease: subnet 10.(128+(i+2)/256).((i+2)%256).0/24
// (this host holds 10.128.1.0/24), a public IP and VTEP MAC of its own.
func scalePeer(i int) lease.Lease {
	j := i + 2
	sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + j/256), byte(j % 256), 0}), 24)
	pub := netip.AddrFrom4([4]byte{172, byte(16 + i/65536), byte(i / 256 % 256), byte(i%256 | 1)})
	mac := vxlan.VtepMAC(fmt.Sprintf("peer-%d", i), scalePool)
	data, _ := json.Marshal(map[string]string{"vtepMAC": mac.String()})
	return lease.Lease{Pool: scalePool, Subnet: sub, HostID: fmt.Sprintf("peer-%d", i), PublicIP: pub, BackendData: data}
}

type scaleBed struct {
	m     *overlay.Manager
	w     *chanWatch
	obs   *fakeObserver
	peers []lease.Lease
	host  *tbed.Host
	n     overlay.Network
}

// newScaleBed runs a Manager with one vxlan network and peers peers,
// synced once.
func newScaleBed(b *testing.B, peers int) *scaleBed {
	b.Helper()
	h := tbed.New(b, "192.168.77.1").Hosts[0]
	s := &scaleBed{w: &chanWatch{ch: make(chan lease.Update, 1)}, obs: &fakeObserver{}, host: h}
	for i := range peers {
		s.peers = append(s.peers, scalePeer(i))
	}
	s.n = overlay.Network{ID: "net-scale", Pool: scalePool, Subnet: netip.MustParsePrefix("10.128.1.0/24"),
		Bridge: tbed.Bridge, Backend: vxlan.Name, VNI: tbed.VNI, MTU: 1450}
	s.m = overlay.NewManager(overlay.ManagerConfig{Leases: newFakeLeases(), Watch: s.w, HostID: h.ID,
		Underlay: nsHost{fakeHost{addr: h.Pub}, h.NS.Handle}, Backends: tbed.RegistryOf(h.B), Resync: time.Hour,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Observer: s.obs})
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); s.m.Close() })
	if err := s.m.Attach(ctx, s.n); err != nil {
		b.Fatal(err)
	}
	go s.m.Run(ctx)
	s.send(b, lease.PoolChange{Reset: true, Upserted: s.peers})
	for deadline := time.Now().Add(5 * time.Minute); !s.m.InSync(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the first sync did not finish")
		}
	}
	s.settle()
	return s
}

// send answers the Manager's watch with c and waits for the pass it makes.
func (s *scaleBed) send(b *testing.B, c lease.PoolChange) {
	b.Helper()
	_, before := s.obs.reconciledNetworks()
	s.w.ch <- lease.Update{Changes: map[netip.Prefix]lease.PoolChange{scalePool: c}, Changed: []netip.Prefix{scalePool}, Complete: true, Gen: 1}
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(time.Millisecond) {
		if _, passes := s.obs.reconciledNetworks(); passes > before {
			return
		}
		if time.Now().After(deadline) {
			b.Fatal("no pass after a lease change")
		}
	}
}

// settle waits for what a pass's kernel events start (a reconcile after
// kernelSettle, 200 ms) to run and end.
func (s *scaleBed) settle() {
	for _, last := s.obs.reconciledNetworks(); ; {
		time.Sleep(400 * time.Millisecond)
		_, now := s.obs.reconciledNetworks()
		if now == last {
			return
		}
		last = now
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScaleLeaseChange: one peer arrives, or (every other op) leaves.
func BenchmarkScaleLeaseChange(b *testing.B) {
	for _, peers := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			s := newScaleBed(b, peers)
			extra := scalePeer(peers)
			var cpu time.Duration
			b.ResetTimer()
			for i := range b.N {
				c := lease.PoolChange{Upserted: []lease.Lease{extra}}
				if i%2 == 1 {
					c = lease.PoolChange{Removed: []netip.Prefix{extra.Subnet}}
				}
				start := cpuTime()
				s.send(b, c)
				b.StopTimer()
				s.settle() // counted in CPU: the change's kernel events' work
				cpu += cpuTime() - start
				b.StartTimer()
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
			_, passes := s.obs.reconciledNetworks()
			b.ReportMetric(float64(passes), "passes")
		})
	}
}

// BenchmarkScaleFullSync: one full pass (the resync's) of a network of
// 10,000 peers with nothing to change.
func BenchmarkScaleFullSync(b *testing.B) {
	s := newScaleBed(b, 10000)
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		start := cpuTime()
		if !s.m.ReconcileAll(context.Background()) {
			b.Fatal("full pass failed")
		}
		cpu += cpuTime() - start
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
