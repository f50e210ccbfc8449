package names

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/felt-net/felt/cluster"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// Writer is the shared store's side of the publisher (lease.Registry).
type Writer interface {
	PutNames(ctx context.Context, pool netip.Prefix, hostID string, entries []lease.NameEntry) error
}

// PublisherConfig holds the publisher's dependencies.
type PublisherConfig struct {
	Docker cluster.Containers
	State  *state.Store // this host's felt networks (Docker network ID → pool, subnet)
	Store  Writer
	HostID string
	Resync time.Duration // period of a full pass
	Log    *slog.Logger
}

// Publisher keeps this host's name records equal to what its Docker
// engine resolves on each felt network. Docker's events are triggers
// only: a full pass (list + inspect) runs at start, after every reconnect
// of the event stream and every Resync; an event re-inspects its
// container. It runs in Background, never from a handler.
type Publisher struct {
	cfg  PublisherConfig
	kick chan struct{}

	mu    sync.Mutex
	full  bool
	dirty map[string]string // container ID → last action

	// nonFelt maps the sandbox of each known container to whether it has
	// networks other than felt's (NonFelt); replaced whole after a pass.
	nonFelt atomic.Pointer[map[string]bool]

	// Only the loop's goroutine uses these.
	known   map[string]cluster.Container // running containers on felt networks
	written map[netip.Prefix]string      // what was last written per pool (a fingerprint)
}

// coalesce is how long the loop waits after a trigger for more: a
// container start is several events (connect per network, start).
const coalesce = 20 * time.Millisecond

// NewPublisher returns a Publisher; Run starts it.
func NewPublisher(cfg PublisherConfig) *Publisher {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	return &Publisher{cfg: cfg, kick: make(chan struct{}, 1), dirty: map[string]string{},
		known: map[string]cluster.Container{}, written: map[netip.Prefix]string{}}
}

func (p *Publisher) trigger(full bool, id, action string) {
	p.mu.Lock()
	if full {
		p.full = true
	} else {
		p.dirty[id] = action
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	go p.events(ctx)
	tick := time.NewTicker(p.cfg.Resync)
	defer tick.Stop()
	p.trigger(true, "", "")
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.trigger(true, "", "")
		case <-p.kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(coalesce):
		}
		p.mu.Lock()
		full, dirty := p.full, p.dirty
		p.full, p.dirty = false, map[string]string{}
		p.mu.Unlock()
		if err := p.pass(ctx, full, dirty); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = min(max(2*wait, 500*time.Millisecond), 10*time.Second)
			p.cfg.Log.Warn("publishing container names failed; retrying", "err", err, "retry", wait)
			time.AfterFunc(wait, func() { p.trigger(true, "", "") })
			continue
		}
		wait = 0
	}
}

// events follows Docker's events, reconnecting after 0.5 s doubling to
// 10 s; every (re)connect asks for a full pass, since events may have been
// missed meanwhile.
func (p *Publisher) events(ctx context.Context) {
	wait := time.Duration(0)
	for ctx.Err() == nil {
		p.trigger(true, "", "")
		err := p.cfg.Docker.WatchContainers(ctx, func(ev cluster.ContainerEvent) {
			switch ev.Action {
			case "start", "die", "rename", "connect", "disconnect", "destroy":
				p.trigger(false, ev.Container, ev.Action)
			}
		})
		if ctx.Err() != nil {
			return
		}
		wait = min(max(2*wait, 500*time.Millisecond), 10*time.Second)
		p.cfg.Log.Debug("Docker's container events ended; watching again", "err", err, "retry", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// pass brings known up to date (all of it, or the dirty containers) and
// writes the records of the pools whose entries changed.
func (p *Publisher) pass(ctx context.Context, full bool, dirty map[string]string) error {
	nets, err := p.cfg.State.Networks(ctx)
	if err != nil {
		return err
	}
	byID := map[string]state.Network{}
	ids := make([]string, 0, len(nets))
	for _, n := range nets {
		byID[n.ID] = n
		ids = append(ids, n.ID)
	}
	if full {
		list, err := p.cfg.Docker.FeltContainers(ctx, ids)
		if err != nil {
			return err
		}
		known := map[string]cluster.Container{}
		for _, id := range list {
			c, err := p.cfg.Docker.ContainerInspect(ctx, id)
			switch {
			case errors.Is(err, cluster.ErrNotFound):
			case err != nil:
				return err
			case c.Running:
				known[c.ID] = c
			}
		}
		p.known = known
		// Compare with the store again: it may have been wiped.
		p.written = map[netip.Prefix]string{}
	} else {
		for id, action := range dirty {
			if action == "die" || action == "destroy" {
				p.drop(id)
				continue
			}
			c, err := p.cfg.Docker.ContainerInspect(ctx, id)
			switch {
			case errors.Is(err, cluster.ErrNotFound):
				p.drop(id)
			case err != nil:
				return err
			case c.Running:
				p.known[c.ID] = c
			default:
				p.drop(c.ID)
			}
		}
	}
	nonFelt := map[string]bool{}
	for _, c := range p.known {
		other := false
		for netID := range c.Networks {
			if _, ok := byID[netID]; !ok {
				other = true
			}
		}
		nonFelt[c.SandboxKey] = other
	}
	p.nonFelt.Store(&nonFelt)
	entries := map[netip.Prefix][]lease.NameEntry{}
	for _, n := range nets {
		entries[n.Pool] = nil
	}
	for pool := range p.written {
		if _, ok := entries[pool]; !ok {
			entries[pool] = nil
		}
	}
	for _, c := range p.known {
		for netID, cn := range c.Networks {
			n, ok := byID[netID]
			// Only this host's own addresses: a record naming others'
			// would be dropped by every reader anyway.
			if !ok || !n.Subnet.Contains(cn.IP) {
				continue
			}
			if names := NamesOf(c, cn); len(names) > 0 {
				entries[n.Pool] = append(entries[n.Pool], lease.NameEntry{IP: cn.IP, Names: names, Name: ptrName(c, cn)})
			}
		}
	}
	var errs []error
	for pool, es := range entries {
		fp := fingerprint(es)
		if last, ok := p.written[pool]; ok && last == fp {
			continue
		}
		if err := p.cfg.Store.PutNames(ctx, pool, p.cfg.HostID, es); err != nil {
			errs = append(errs, err)
			continue
		}
		p.written[pool] = fp
	}
	return errors.Join(errs...)
}

// NonFelt reports whether the container of sandbox (a SandboxKey) has
// networks other than felt's, as of the last pass; known is false if no
// pass has seen it.
func (p *Publisher) NonFelt(sandbox string) (nonFelt, known bool) {
	m := p.nonFelt.Load()
	if m == nil {
		return false, false
	}
	nonFelt, known = (*m)[sandbox]
	return nonFelt, known
}

// drop forgets a container, by its full ID or, as some events give it, a
// prefix of it.
func (p *Publisher) drop(id string) {
	for k := range p.known {
		if strings.HasPrefix(k, id) {
			delete(p.known, k)
		}
	}
}

func fingerprint(es []lease.NameEntry) string {
	parts := make([]string, 0, len(es))
	for _, e := range es {
		parts = append(parts, e.IP.String()+"="+e.Name+"="+strings.Join(e.Names, ","))
	}
	slices.Sort(parts)
	return strings.Join(parts, ";")
}

// ptrName is the name c's address on cn resolves back to (PTR): what
// Docker's resolver answers for a local container, its name and the
// network's, "c2.blue" (the network's name on this host: a cluster
// network has one name on every host); "" if that is no valid DNS name.
func ptrName(c cluster.Container, cn cluster.ContainerNet) string {
	n := strings.ToLower(c.Name)
	if cn.Name != "" {
		n += "." + strings.ToLower(cn.Name)
	}
	if !ValidName(n) {
		return ""
	}
	return n
}

// NamesOf is what Docker itself resolves to c on network cn: DNSNames
// when Docker reports them (API ≥ 1.44: name, aliases, short ID,
// hostname); otherwise the name, the aliases (which hold the short ID up
// to 1.44), the short ID and the compose service label (normally an alias
// already). Lowercased, deduplicated, invalid DNS names left out.
func NamesOf(c cluster.Container, cn cluster.ContainerNet) []string {
	var in []string
	if len(cn.DNSNames) > 0 {
		in = cn.DNSNames
	} else {
		in = append(in, c.Name)
		in = append(in, cn.Aliases...)
		if len(c.ID) >= 12 {
			in = append(in, c.ID[:12])
		}
		if s := c.Labels["com.docker.compose.service"]; s != "" {
			in = append(in, s)
		}
	}
	out := make([]string, 0, len(in))
	for _, n := range in {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if ValidName(n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ValidName reports whether n is a DNS name felt serves: at most 253
// characters, labels of 1 to 63 letters, digits, '-' or '_' (Docker allows
// '_' in container names and resolves them).
func ValidName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
