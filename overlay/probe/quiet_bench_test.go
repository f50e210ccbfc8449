package probe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// BenchmarkProberQuiet is the CPU the prober costs a host whose overlay
// does not change, per second of running, with 1,000 and 10,000 peers
// (issue #14's quiet CPU): echoes answered at once by a fake pinger, so
// what is measured is the prober's own scheduling (next scans every
// target for each check started) and its refresh (every second, the
// targets rebuilt). Each op is one second of running.
func BenchmarkProberQuiet(b *testing.B) {
	for _, count := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("peers=%d", count), func(b *testing.B) {
			ts := make([]Target, count)
			pool := netip.MustParsePrefix("10.128.0.0/9")
			for i := range ts {
				j := i + 2
				sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + j/256), byte(j % 256), 0}), 24)
				ts[i] = Target{Network: "net", Pool: pool, Backend: "vxlan", HostID: fmt.Sprintf("peer-%d", i),
					PublicIP: netip.AddrFrom4([4]byte{172, 16, byte(i / 256), byte(i % 256)}), Subnet: sub,
					Src: netip.MustParseAddr("10.128.1.1"), Dst: sub.Addr().Next(), MTU: 1450}
			}
			p, err := New(Config{Pinger: newFakePinger(), Targets: func() []Target { return ts },
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { p.Run(ctx); close(done) }()
			time.Sleep(time.Second) // the first refresh
			start := cpu()
			b.ResetTimer()
			time.Sleep(time.Duration(b.N) * time.Second)
			b.StopTimer()
			used := cpu() - start
			cancel()
			<-done
			b.ReportMetric(float64(used.Microseconds())/1000/float64(b.N), "cpu-ms/s")
		})
	}
}

func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
