package probe

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Defaults of Config.
const (
	// DefaultInterval is how often each peer is probed (FELT_PROBE_INTERVAL).
	DefaultInterval = 5 * time.Second
	// DefaultPerSecond caps the peers probed per second over all networks
	// (each check is one small echo and one full-size echo, plus one retry
	// of a lost one): 1,000 peers are then each checked every 20 s rather
	// than flooding the overlay with 400 echoes a second.
	DefaultPerSecond = 50
	// DefaultTimeout is how long one echo waits for its reply.
	DefaultTimeout = time.Second
	// smallSize is the small echo's data, as ping sends.
	smallSize = 56
	// tries: an echo lost once (a neighbour being resolved, an ARP for the
	// VTEP) is sent again before the peer counts as unreachable.
	tries = 2
	// refreshEvery is how often the targets are read again: new peers are
	// probed within a second, and departed ones forgotten.
	refreshEvery = time.Second
	// maxInFlight bounds the checks under way (each waits up to
	// 2*tries*Timeout for peers that do not answer).
	maxInFlight = 64
)

// Config holds the Prober's dependencies.
type Config struct {
	Interval  time.Duration // period of each peer's check; DefaultInterval if 0
	PerSecond int           // cap of checks started per second; DefaultPerSecond if 0
	Timeout   time.Duration // wait for one reply; DefaultTimeout if 0
	Pinger    Pinger
	// Targets lists the peers to probe now (the plugin builds them from
	// the overlay Manager's snapshot); called every second from one
	// goroutine, it must not block on the store. It may return the same
	// slice as before (same array and length, unmodified) to say nothing
	// changed: the prober then skips its refresh.
	Targets  func() []Target
	Observer Observer // nil: nobody
	Log      *slog.Logger
	Now      func() time.Time // time.Now if nil
}

// Prober probes every target at Interval, at most PerSecond a second.
type Prober struct {
	cfg Config

	mu      sync.Mutex
	targets map[Key]*entry
	queue   schedule // the targets not being probed, by due time
	// leaving are the targets that left while their check was in flight:
	// one listed again before it ends is not checked twice at once.
	leaving   map[Key]*entry
	refreshes uint64
	results   map[Key]Result
	// last is the list of the last refresh: Targets handing the very same
	// slice again (nothing changed) costs no refresh.
	last []Target
}

// New returns a Prober; Run starts it.
func New(cfg Config) (*Prober, error) {
	if cfg.Pinger == nil || cfg.Targets == nil {
		return nil, errors.New("probe: Pinger and Targets are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.PerSecond <= 0 {
		cfg.PerSecond = DefaultPerSecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Prober{cfg: cfg, targets: map[Key]*entry{}, leaving: map[Key]*entry{}, results: map[Key]Result{}}, nil
}

// Interval is the period of each peer's check.
func (p *Prober) Interval() time.Duration { return p.cfg.Interval }

// Result is the latest result of t's peer; false if it was never probed
// (or is not a target).
func (p *Prober) Result(t Target) (Result, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.results[KeyOf(t)]
	return r, ok
}

// Run probes until ctx ends, and returns once every probe it started has.
func (p *Prober) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxInFlight)
	gap := time.Second / time.Duration(p.cfg.PerSecond)
	var lastStart, nextRefresh time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	// finished wakes the loop when a check ends: its peer is then due
	// again, which the loop could not see while it was in flight.
	finished := make(chan struct{}, 1)
	sleep := func(d time.Duration) bool {
		timer.Reset(max(d, 0))
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		case <-finished:
		}
		return true
	}
	for ctx.Err() == nil {
		now := p.now()
		if !now.Before(nextRefresh) {
			p.refresh(p.cfg.Targets(), now)
			nextRefresh = now.Add(refreshEvery)
		}
		e, due, ok := p.next()
		if !ok || due.After(now) {
			until := nextRefresh
			if ok && due.Before(until) {
				until = due
			}
			if !sleep(until.Sub(now)) {
				return
			}
			continue
		}
		// The global cap: one check every gap, whatever the number of peers.
		if wait := lastStart.Add(gap).Sub(now); wait > 0 {
			if !sleep(wait) {
				return
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		p.mu.Lock()
		if e.index < 0 { // forgotten while waiting for a slot
			p.mu.Unlock()
			<-sem
			continue
		}
		p.queue.remove(e)
		e.due = now.Add(p.cfg.Interval)
		t, k := e.t, e.key
		p.mu.Unlock()
		lastStart = now
		wg.Go(func() {
			defer func() { <-sem }()
			r := p.check(ctx, t)
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.targets[k] == e {
				p.queue.add(e) // due again at e.due
			} else if p.leaving[k] == e {
				delete(p.leaving, k)
			}
			if ctx.Err() == nil {
				p.record(t, r)
			}
			select {
			case finished <- struct{}{}:
			default:
			}
		})
	}
}

// refresh replaces the targets: new peers are due at once (the cap
// spreads them out), departed ones are forgotten, changed ones (a new
// MTU or gateway) keep their schedule and result. An unchanged list costs
// one map lookup a target: no set is rebuilt, and the departed are looked
// for only when fewer targets were listed than are known.
func (p *Prober) refresh(ts []Target, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(ts) > 0 && len(ts) == len(p.last) && &ts[0] == &p.last[0] {
		return // the list of the last refresh, unchanged
	}
	p.last = ts
	p.refreshes++
	gen := p.refreshes
	listed := 0
	for _, t := range ts {
		k := KeyOf(t)
		e, ok := p.targets[k]
		if !ok {
			if e, ok = p.leaving[k]; ok {
				// Back before its last check ended: the check's end
				// schedules it, due at once, as a new peer.
				delete(p.leaving, k)
				e.due = now
			} else {
				e = &entry{key: k, due: now}
				p.queue.add(e)
			}
			p.targets[k] = e
		}
		e.t = t // a key listed twice: the last one wins
		if e.seen != gen {
			e.seen = gen
			listed++
		}
	}
	if listed == len(p.targets) {
		return
	}
	for k, e := range p.targets {
		if e.seen == gen {
			continue
		}
		delete(p.targets, k)
		if e.index >= 0 {
			p.queue.remove(e)
		} else {
			p.leaving[k] = e // in flight: its end unschedules it
		}
		p.forget(k)
	}
}

// next is the target due first that is not being probed, and when it is
// due (read under the lock: the entry's fields are the Prober's).
func (p *Prober) next() (*entry, time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.queue.first()
	if e == nil {
		return nil, time.Time{}, false
	}
	return e, e.due, true
}

// check probes one peer: a small echo, then, if it came back, a full-size
// one (the network's MTU as the IP packet's size) with don't-fragment set.
func (p *Prober) check(ctx context.Context, t Target) Result {
	r := Result{Probed: true}
	rtt, err := p.ping(ctx, t, smallSize)
	if err != nil {
		r.Err = err.Error()
		r.Last = p.now()
		return r
	}
	r.Reachable, r.RTT, r.MTUOK = true, rtt, true
	// The IP packet of an echo with size bytes of data is size+28: 20 of
	// IPv4 header, 8 of ICMP.
	if full := t.MTU - 28; full > smallSize {
		if _, err := p.ping(ctx, t, full); err != nil {
			r.MTUOK = false
			r.Err = "full-size echo (" + itoa(t.MTU) + " bytes): " + err.Error()
		}
	}
	r.Last = p.now()
	return r
}

func (p *Prober) ping(ctx context.Context, t Target, size int) (time.Duration, error) {
	var err error
	for range tries {
		var rtt time.Duration
		if rtt, err = p.cfg.Pinger.Ping(ctx, t.Src, t.Dst, size, p.cfg.Timeout); err == nil {
			return rtt, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return 0, err
}
