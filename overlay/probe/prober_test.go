package probe

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
)

// fakePinger answers every echo unless its destination is down, or its
// data is larger than maxSize (an MTU black hole), and counts them.
type fakePinger struct {
	mu      sync.Mutex
	down    map[netip.Addr]bool
	maxSize int // 0: no limit
	small   map[netip.Addr]int
	full    map[netip.Addr]int
	sizes   map[int]int // echoes by data size
}

func newFakePinger() *fakePinger {
	return &fakePinger{down: map[netip.Addr]bool{}, small: map[netip.Addr]int{}, full: map[netip.Addr]int{}, sizes: map[int]int{}}
}

func (f *fakePinger) Ping(ctx context.Context, src, dst netip.Addr, size int, wait time.Duration) (time.Duration, error) {
	f.mu.Lock()
	f.sizes[size]++
	if size == smallSize {
		f.small[dst]++
	} else {
		f.full[dst]++
	}
	down, limit := f.down[dst], f.maxSize
	f.mu.Unlock()
	switch {
	case down:
		return 0, fmt.Errorf("no reply from %s within %s", dst, wait)
	case limit > 0 && size > limit:
		return 0, fmt.Errorf("echo of %d bytes to %s: %w", size, dst, ErrTooBig)
	}
	return 3 * time.Millisecond, nil
}

func (f *fakePinger) set(fn func(f *fakePinger)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakePinger) counts(dst netip.Addr) (small, full int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.small[dst], f.full[dst]
}

func (f *fakePinger) sent(size int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sizes[size]
}

func (f *fakePinger) total() (n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.small {
		n += c
	}
	return n
}

// fakeObserver keeps the latest values, as a gauge does.
type fakeObserver struct {
	mu        sync.Mutex
	reachable map[string]bool
	mtu       map[string]bool
	rtt       map[string]time.Duration
	forgotten []string
}

func newFakeObserver() *fakeObserver {
	return &fakeObserver{reachable: map[string]bool{}, mtu: map[string]bool{}, rtt: map[string]time.Duration{}}
}

func (o *fakeObserver) SetPeer(pool, peer string, reachable bool, rtt time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reachable[pool+" "+peer] = reachable
	if reachable {
		o.rtt[pool+" "+peer] = rtt
	}
}

func (o *fakeObserver) SetPeerMTU(pool, peer string, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.mtu[pool+" "+peer] = ok
}

func (o *fakeObserver) ForgetPeer(pool, peer string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.reachable, pool+" "+peer)
	delete(o.mtu, pool+" "+peer)
	delete(o.rtt, pool+" "+peer)
	o.forgotten = append(o.forgotten, pool+" "+peer)
}

func (o *fakeObserver) get(series string) (reachable, mtu, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	reachable, ok = o.reachable[series]
	return reachable, o.mtu[series], ok
}

// targets makes n peers of pool 10.42.0.0/16, peer i holding 10.42.i.0/24
// at 192.168.77.i.
func targets(n int) []Target {
	var ts []Target
	for i := range n {
		ts = append(ts, Target{
			Network: "net1", Pool: netip.MustParsePrefix("10.42.0.0/16"), Backend: "vxlan",
			HostID: fmt.Sprintf("host%02d", i+2), PublicIP: netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 2)}),
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(i + 2), 0}), 24),
			Src:    netip.MustParseAddr("10.42.1.1"), Dst: netip.AddrFrom4([4]byte{10, 42, byte(i + 2), 1}), MTU: 1450,
		})
	}
	return ts
}

// targetList is a Targets function whose list a test changes.
type targetList struct {
	mu sync.Mutex
	ts []Target
}

func (l *targetList) get() []Target {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Target(nil), l.ts...)
}

func (l *targetList) set(ts []Target) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ts = ts
}

func start(t *testing.T, cfg Config) (*Prober, *testkit.LogBuffer) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	cfg.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p, logs
}

// The global cap holds whatever the number of peers: 200 peers due every
// 10 ms, at most 20 checks a second.
func TestRateCap(t *testing.T) {
	pinger := newFakePinger()
	ts := targets(200)
	_, _ = start(t, Config{Interval: 10 * time.Millisecond, PerSecond: 20, Pinger: pinger, Targets: func() []Target { return ts }})
	time.Sleep(time.Second)
	n := pinger.total()
	// 1 s at 20/s: 20, plus the one started at once; some slack for a
	// slow machine, none for a flood.
	if n < 10 || n > 22 {
		t.Fatalf("%d checks in 1 s with a cap of 20 a second", n)
	}
}

// Every peer is checked about every Interval: two peers, 50 ms, 600 ms.
func TestInterval(t *testing.T) {
	pinger := newFakePinger()
	ts := targets(2)
	_, _ = start(t, Config{Interval: 50 * time.Millisecond, PerSecond: 1000, Pinger: pinger, Targets: func() []Target { return ts }})
	time.Sleep(600 * time.Millisecond)
	for _, tg := range ts {
		small, full := pinger.counts(tg.Dst)
		if small < 6 || small > 14 {
			t.Errorf("%s: %d checks in 600 ms at one per 50 ms", tg.Dst, small)
		}
		if full != small {
			t.Errorf("%s: %d full-size echoes for %d small ones: each reachable check sends one", tg.Dst, full, small)
		}
	}
}

// A peer that stops answering is logged once as unreachable, however many
// probes fail, and once when it answers again; the observer follows.
func TestChangeOnlyLogging(t *testing.T) {
	pinger := newFakePinger()
	ts := targets(2)
	obs := newFakeObserver()
	p, logs := start(t, Config{Interval: 10 * time.Millisecond, PerSecond: 1000, Timeout: time.Millisecond,
		Pinger: pinger, Observer: obs, Targets: func() []Target { return ts }})
	h := ts[0]
	series := "10.42.0.0/16 " + h.PublicIP.String()
	waitResult(t, p, h, func(r Result) bool { return r.Reachable && r.MTUOK })
	if r, m, ok := obs.get(series); !ok || !r || !m {
		t.Fatalf("observer: reachable %v mtu %v (known %v), want both", r, m, ok)
	}
	if logs.Contains("unreachable") {
		t.Fatalf("a reachable peer logged as unreachable:\n%s", logs)
	}

	pinger.set(func(f *fakePinger) { f.down[h.Dst] = true })
	r := waitResult(t, p, h, func(r Result) bool { return !r.Reachable })
	if !strings.Contains(r.Err, "no reply") || r.MTUOK {
		t.Errorf("unreachable result: %+v", r)
	}
	before, _ := pinger.counts(h.Dst)
	testkit.WaitFor(t, "ten more failed probes", func() bool { n, _ := pinger.counts(h.Dst); return n >= before+10*tries })
	if got := strings.Count(logs.String(), "peer unreachable over the overlay"); got != 1 {
		t.Fatalf("%d unreachable lines, want 1:\n%s", got, logs)
	}
	if !logs.Contains("udp/4789 blocked") {
		t.Errorf("no hint for a vxlan peer:\n%s", logs)
	}
	if r, _, _ := obs.get(series); r {
		t.Error("observer still says reachable")
	}
	since := r.Since

	pinger.set(func(f *fakePinger) { f.down[h.Dst] = false })
	r = waitResult(t, p, h, func(r Result) bool { return r.Reachable })
	if !r.Since.After(since) || r.RTT != 3*time.Millisecond {
		t.Errorf("back: since %v (was %v), rtt %v", r.Since, since, r.RTT)
	}
	time.Sleep(50 * time.Millisecond)
	if got := strings.Count(logs.String(), "peer reachable again over the overlay"); got != 1 {
		t.Fatalf("%d reachable-again lines, want 1:\n%s", got, logs)
	}
	if got := strings.Count(logs.String(), "peer unreachable over the overlay"); got != 1 {
		t.Fatalf("%d unreachable lines after recovery, want 1:\n%s", got, logs)
	}
	// The other peer never changed: nothing logged about it but debug.
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "peer="+ts[1].PublicIP.String()+" ") && !strings.Contains(line, "level=DEBUG") {
			t.Errorf("the healthy peer was logged: %s", line)
		}
	}
}

// Full-size echoes lost, small ones answered: reachable, MTU not OK,
// logged once, and fine again once the path carries them.
func TestMTUBlackHole(t *testing.T) {
	pinger := newFakePinger()
	pinger.maxSize = 1400
	ts := targets(1)
	obs := newFakeObserver()
	p, logs := start(t, Config{Interval: 10 * time.Millisecond, PerSecond: 1000, Pinger: pinger, Observer: obs, Targets: func() []Target { return ts }})
	r := waitResult(t, p, ts[0], func(r Result) bool { return r.Probed })
	if !r.Reachable || r.MTUOK || !strings.Contains(r.Err, "1450 bytes") || !strings.Contains(r.Err, ErrTooBig.Error()) {
		t.Fatalf("result %+v, want reachable with full-size packets lost", r)
	}
	if pinger.sent(1422) == 0 {
		t.Error("no echo of the MTU's size (1450 - 28 bytes of data)")
	}
	if rch, m, _ := obs.get("10.42.0.0/16 " + ts[0].PublicIP.String()); !rch || m {
		t.Errorf("observer: reachable %v mtu %v", rch, m)
	}
	before, _ := pinger.counts(ts[0].Dst)
	testkit.WaitFor(t, "more probes", func() bool { n, _ := pinger.counts(ts[0].Dst); return n >= before+5 })
	if got := strings.Count(logs.String(), "full-size packets lost"); got != 1 {
		t.Fatalf("%d full-size lines, want 1:\n%s", got, logs)
	}
	pinger.set(func(f *fakePinger) { f.maxSize = 0 })
	waitResult(t, p, ts[0], func(r Result) bool { return r.MTUOK })
	testkit.WaitFor(t, "logged", func() bool { return logs.Contains("full-size packets to peer pass again") })
}

// A peer that leaves (its lease gone) is forgotten: no result, no series.
func TestForget(t *testing.T) {
	pinger := newFakePinger()
	list := &targetList{ts: targets(3)}
	obs := newFakeObserver()
	p, _ := start(t, Config{Interval: 10 * time.Millisecond, PerSecond: 1000, Pinger: pinger, Observer: obs, Targets: list.get})
	gone := list.ts[2]
	waitResult(t, p, gone, func(r Result) bool { return r.Probed })
	list.set(list.ts[:2])
	testkit.WaitFor(t, "peer forgotten", func() bool { _, ok := p.Result(gone); return !ok })
	if _, _, ok := obs.get("10.42.0.0/16 " + gone.PublicIP.String()); ok {
		t.Error("the departed peer's series stays")
	}
	n, _ := pinger.counts(gone.Dst)
	time.Sleep(100 * time.Millisecond)
	if m, _ := pinger.counts(gone.Dst); m > n+tries {
		t.Errorf("a departed peer is still probed: %d, then %d echoes", n, m)
	}
}

func TestNewNeedsPingerAndTargets(t *testing.T) {
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "Pinger") {
		t.Fatalf("New without a pinger: %v", err)
	}
}

func waitResult(t *testing.T, p *Prober, tg Target, cond func(Result) bool) Result {
	t.Helper()
	var r Result
	testkit.WaitFor(t, "probe result of "+tg.Dst.String(), func() bool {
		var ok bool
		r, ok = p.Result(tg)
		return ok && cond(r)
	})
	return r
}
