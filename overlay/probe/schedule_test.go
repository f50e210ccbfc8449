package probe

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
)

// manyTargets makes n peers of pool 10.0.0.0/8 (more than targets' 250),
// peer i holding 10.i/256.i%256.0/24 at 172.16.i/256.i%256.
func manyTargets(n int) []Target {
	ts := make([]Target, n)
	pool := netip.MustParsePrefix("10.0.0.0/8")
	for i := range ts {
		j := i + 2
		sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(j / 256), byte(j % 256), 0}), 24)
		ts[i] = Target{Network: "net1", Pool: pool, Backend: "vxlan", HostID: fmt.Sprintf("host%05d", j),
			PublicIP: netip.AddrFrom4([4]byte{172, 16, byte(j / 256), byte(j % 256)}), Subnet: sub,
			Src: netip.MustParseAddr("10.0.1.1"), Dst: sub.Addr().Next(), MTU: 1450}
	}
	return ts
}

// With more targets due than the cap allows, every one is checked in
// turn (none starves behind the others), no faster than the cap; a target
// that leaves is never probed again, the others carry on.
func TestManyTargetsTakeTurnsUnderCap(t *testing.T) {
	const n, perSecond = 150, 300
	pinger := newFakePinger()
	list := &targetList{ts: manyTargets(n)}
	begin := time.Now()
	p, _ := start(t, Config{Interval: 50 * time.Millisecond, PerSecond: perSecond, Pinger: pinger, Targets: list.get})
	// Due every 50 ms, but the cap allows each one check every 500 ms.
	testkit.WaitFor(t, "two rounds of checks", func() bool { return pinger.total() >= 2*n })
	elapsed := time.Since(begin)
	total := pinger.total()
	// The first check starts at once, each other one gap after the last.
	if least := time.Duration(total-1) * time.Second / perSecond; elapsed < least*9/10 {
		t.Errorf("%d checks in %s: faster than %d a second", total, elapsed, perSecond)
	}
	lo, hi := total, 0
	for _, tg := range list.ts {
		small, _ := pinger.counts(tg.Dst)
		lo, hi = min(lo, small), max(hi, small)
	}
	// Taken in turn, oldest due first: 2 each, one more for those a third
	// round reached while counting.
	if lo < 1 || hi > 3 {
		t.Errorf("checks per target from %d to %d after %d checks of %d targets: not in turn", lo, hi, total, n)
	}

	kept, gone := list.ts[:n/2], list.ts[n/2:]
	list.set(kept)
	testkit.WaitFor(t, "departed targets forgotten", func() bool {
		for _, tg := range gone {
			if _, ok := p.Result(tg); ok {
				return false
			}
		}
		return true
	})
	// The checks under way when they left may still send echoes: wait
	// for their end, after which not one more may go.
	testkit.WaitFor(t, "departed targets' checks ended", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.leaving) == 0
	})
	before := map[netip.Addr]int{}
	for _, tg := range gone {
		before[tg.Dst], _ = pinger.counts(tg.Dst)
	}
	after := pinger.total()
	testkit.WaitFor(t, "another round of the others", func() bool { return pinger.total() >= after+len(kept) })
	for _, tg := range gone {
		if m, _ := pinger.counts(tg.Dst); m != before[tg.Dst] {
			t.Errorf("%s probed after it left: %d echoes, then %d", tg.Dst, before[tg.Dst], m)
		}
	}
	for _, tg := range kept {
		if _, ok := p.Result(tg); !ok {
			t.Errorf("%s stays a target, but has no result", tg.Dst)
		}
	}
}

func quietProber(t testing.TB) *Prober {
	t.Helper()
	p, err := New(Config{Pinger: newFakePinger(), Targets: func() []Target { return nil },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A refresh with the same targets keeps every schedule; a changed target
// (a new MTU) keeps its schedule and result and is probed as it is now; a
// departed one leaves the schedule; a new one is due at once.
func TestRefreshDiffsTargets(t *testing.T) {
	p := quietProber(t)
	ts := manyTargets(3)
	t0 := time.Unix(1000, 0)
	p.refresh(ts, t0)
	if len(p.queue) != 3 {
		t.Fatalf("%d scheduled, want 3", len(p.queue))
	}
	// As Run does: the first is checked, due again at t0+5s.
	e, _, _ := p.next()
	p.queue.remove(e)
	e.due = t0.Add(5 * time.Second)
	p.queue.add(e)
	p.results[e.key] = Result{Probed: true, Reachable: true}

	ts = slices.Clone(ts) // a new list, as Targets makes one when something changed
	changed := ts[0]
	for i := range ts {
		if KeyOf(ts[i]) == e.key {
			ts[i].MTU = 1400
			changed = ts[i]
		}
	}
	p.refresh(ts, t0.Add(time.Second))
	if got := p.targets[e.key]; got != e || got.due != t0.Add(5*time.Second) || got.t.MTU != 1400 {
		t.Fatalf("changed target: %+v, want the same entry due at t0+5s with MTU 1400", got)
	}
	if _, ok := p.Result(changed); !ok {
		t.Error("a changed target lost its result")
	}
	for _, x := range p.queue {
		if x != e && !x.due.Equal(t0) {
			t.Errorf("%s: due %v after an unchanged refresh, want t0", x.t.Dst, x.due)
		}
	}

	// One leaves, one comes.
	fresh := manyTargets(4)[3]
	p.refresh([]Target{ts[0], ts[1], fresh}, t0.Add(2*time.Second))
	if len(p.targets) != 3 || len(p.queue) != 3 {
		t.Fatalf("%d targets, %d scheduled, want 3 and 3", len(p.targets), len(p.queue))
	}
	if _, ok := p.targets[KeyOf(ts[2])]; ok {
		t.Error("the departed target stays")
	}
	if f := p.targets[KeyOf(fresh)]; f == nil || !f.due.Equal(t0.Add(2*time.Second)) || f.index < 0 {
		t.Errorf("new target: %+v, want scheduled at once", f)
	}
	for i, x := range p.queue {
		if x.index != i {
			t.Fatalf("heap index %d at %d", x.index, i)
		}
	}
}

// A target that leaves while its check is in flight and comes back before
// it ends is not scheduled twice: the check's end schedules it, due at
// once.
func TestRefreshLeaveAndReturnInFlight(t *testing.T) {
	p := quietProber(t)
	ts := manyTargets(2)
	t0 := time.Unix(1000, 0)
	p.refresh(ts, t0)
	e, _, _ := p.next()
	p.queue.remove(e) // in flight
	e.due = t0.Add(5 * time.Second)

	var other Target
	for _, tg := range ts {
		if KeyOf(tg) != e.key {
			other = tg
		}
	}
	p.refresh([]Target{other}, t0.Add(time.Second))
	if p.leaving[e.key] != e || p.targets[e.key] != nil {
		t.Fatal("a target that left in flight is not waiting for its check's end")
	}
	p.refresh(ts, t0.Add(2*time.Second))
	if p.targets[e.key] != e || len(p.leaving) != 0 || len(p.queue) != 1 {
		t.Fatalf("back in flight: entry reused %v, %d leaving, %d scheduled (want the same entry, 0, 1)",
			p.targets[e.key] == e, len(p.leaving), len(p.queue))
	}
	if !e.due.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("due %v, want at once (t0+2s) as a new peer", e.due)
	}
}

// BenchmarkRefreshUnchanged is the once-a-second refresh of 10,000
// targets that did not change.
func BenchmarkRefreshUnchanged(b *testing.B) {
	p := quietProber(b)
	ts := manyTargets(10000)
	now := time.Now()
	p.refresh(ts, now)
	b.ReportAllocs()
	for b.Loop() {
		p.refresh(ts, now)
	}
}

// Targets handing the very same slice again costs no refresh; a new slice
// (a copy with one target changed) is refreshed as before.
func TestSameTargetsSkipRefresh(t *testing.T) {
	p, err := New(Config{Pinger: newFakePinger(), Targets: func() []Target { return nil }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := manyTargets(300)
	now := time.Now()
	p.refresh(ts, now)
	p.refresh(ts, now)
	if p.refreshes != 1 {
		t.Fatalf("the same slice twice: %d refreshes, want 1", p.refreshes)
	}
	changed := append([]Target(nil), ts...)
	changed[7].MTU = 1400
	p.refresh(changed, now)
	if p.refreshes != 2 || p.targets[KeyOf(changed[7])].t.MTU != 1400 {
		t.Fatalf("a new slice: %d refreshes, MTU %d; want 2 and the new MTU", p.refreshes, p.targets[KeyOf(changed[7])].t.MTU)
	}
	p.refresh(changed[:10], now)
	if len(p.targets) != 10 {
		t.Fatalf("a shorter list of the same array: %d targets, want 10", len(p.targets))
	}
}
