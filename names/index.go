package names

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/felt-net/felt/lease"
)

// Records is the shared store's side of the index (lease.Registry).
type Records interface {
	WatchNames(ctx context.Context, after uint64) ([]lease.NameRecord, uint64, error)
	Leases(ctx context.Context, pool netip.Prefix) ([]lease.Lease, error)
	Now() time.Time
}

// Index is every other host's container names, per pool, as the store
// holds them. Lookups read an immutable table through an atomic pointer:
// the DNS handler takes no lock.
type Index struct {
	recs   Records
	hostID string
	log    *slog.Logger

	mu      sync.Mutex // guards records and leases, the inputs of the table
	records []lease.NameRecord
	leases  []lease.Lease
	table   atomic.Pointer[table]
}

// table maps pool → name → addresses, and pool → address → the name it
// resolves back to (PTR).
type table struct {
	names map[netip.Prefix]map[string][]address
	ptrs  map[netip.Prefix]map[netip.Addr]ptr
}

// ptr is the name an address resolves back to, and until when its host's
// lease vouches for it (zero: a permanent lease).
type ptr struct {
	name  string
	until time.Time
}

// address is one container's address and until when its host's lease
// vouches for it (zero: a permanent lease).
type address struct {
	ip    netip.Addr
	until time.Time
}

// NewIndex returns an empty index; Run fills it. The records of hostID
// (this host) are left out: Docker has already answered every local name
// of the querying container's networks, so felt only ever needs others'.
func NewIndex(recs Records, hostID string, log *slog.Logger) *Index {
	if log == nil {
		log = slog.Default()
	}
	x := &Index{recs: recs, hostID: hostID, log: log}
	x.table.Store(&table{})
	return x
}

// Lookup returns the live addresses of name in pools, deduplicated, and
// whether the name is known there at all (live or not).
func (x *Index) Lookup(pools []netip.Prefix, name string, now time.Time) (ips []netip.Addr, known bool) {
	t := *x.table.Load()
	seen := map[netip.Addr]bool{}
	for _, p := range pools {
		for _, a := range t.names[p][name] {
			known = true
			if (!a.until.IsZero() && now.After(a.until)) || seen[a.ip] {
				continue
			}
			seen[a.ip] = true
			ips = append(ips, a.ip)
		}
	}
	return ips, known
}

// Reverse returns the name ip resolves back to in pools (the first pool
// that has it live), and whether ip is known there at all (live or not).
func (x *Index) Reverse(pools []netip.Prefix, ip netip.Addr, now time.Time) (name string, known bool) {
	t := x.table.Load()
	for _, p := range pools {
		r, ok := t.ptrs[p][ip]
		if !ok {
			continue
		}
		known = true
		if r.until.IsZero() || !now.After(r.until) {
			return r.name, true
		}
	}
	return "", known
}

// Run watches the name records (a blocking query) until ctx ends,
// rebuilding the table after each answer. The leases that vouch for the
// records are read, not watched: with each name change, and again before
// the earliest lease in use expires (renewals move it) or every
// leaseRefresh. A second blocking query on every lease would wake every
// host for every lease change in the cluster, doubling what the overlay's
// own lease watch costs Consul, for records that change far less often.
func (x *Index) Run(ctx context.Context) {
	changed := make(chan struct{}, 1)
	go watch(ctx, x.log, "names", x.recs.WatchNames, func(r []lease.NameRecord) {
		x.mu.Lock()
		same := x.records != nil && reflect.DeepEqual(x.records, r)
		x.records = r
		x.mu.Unlock()
		// An answer may change nothing: Consul gives an empty (or quiet)
		// prefix an index that moves with every write elsewhere, so the
		// names query woke at every lease change in the cluster, and each
		// wake read the leases again.
		if same {
			return
		}
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-timer.C:
		}
		next := leaseRefresh
		if err := x.readLeases(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			x.log.Warn("reading leases for container names", "err", err)
			next = 2 * time.Second
		}
		x.rebuild()
		if at, ok := x.firstExpiry(); ok {
			// Just before it: by then its host has renewed it (every
			// third of the TTL), or it has expired and its names go.
			next = min(next, max(at.Sub(x.recs.Now())-time.Second, time.Second))
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// leaseRefresh bounds how stale the leases behind the table may get: a
// host that took another subnet keeps its old names record until it
// publishes again.
const leaseRefresh = 30 * time.Second

// readLeases reads the leases of the pools other hosts have names in, and
// of no other pool: with no such names it reads nothing.
func (x *Index) readLeases(ctx context.Context) error {
	x.mu.Lock()
	var pools []netip.Prefix
	for _, r := range x.records {
		if r.HostID != x.hostID && !slices.Contains(pools, r.Pool) {
			pools = append(pools, r.Pool)
		}
	}
	x.mu.Unlock()
	var all []lease.Lease
	for _, p := range pools {
		l, err := x.recs.Leases(ctx, p)
		if err != nil {
			return err
		}
		all = append(all, l...)
	}
	x.mu.Lock()
	x.leases = all
	x.mu.Unlock()
	return nil
}

// firstExpiry is the earliest expiry of a lease that vouches for a name in
// the table.
func (x *Index) firstExpiry() (time.Time, bool) {
	var first time.Time
	for _, names := range x.table.Load().names {
		for _, addrs := range names {
			for _, a := range addrs {
				if !a.until.IsZero() && (first.IsZero() || a.until.Before(first)) {
					first = a.until
				}
			}
		}
	}
	return first, !first.IsZero()
}

// watch runs one blocking query after another; after a failure it waits
// 0.5 s, 1 s, then 2 s, as the overlay's lease watch does.
func watch[T any](ctx context.Context, log *slog.Logger, what string, w func(context.Context, uint64) ([]T, uint64, error), got func([]T)) {
	var idx uint64
	wait := time.Duration(0)
	for ctx.Err() == nil {
		items, next, err := w(ctx, idx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = min(max(2*wait, 500*time.Millisecond), 2*time.Second)
			log.Warn("watching for container names", "what", what, "err", err, "retry", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			idx = 0
			continue
		}
		wait = 0
		idx = next
		got(items)
	}
}

func (x *Index) rebuild() {
	x.mu.Lock()
	t := build(x.records, x.leases, x.hostID)
	x.mu.Unlock()
	x.table.Store(&t)
}

// build judges records by leases: an entry counts only inside a lease of
// its own host in its own pool, and only until that lease expires, so a
// dead host's names go when its lease does, and no host can answer for
// another's addresses.
func build(records []lease.NameRecord, leases []lease.Lease, self string) table {
	type holder struct {
		pool netip.Prefix
		host string
	}
	held := map[holder][]lease.Lease{} // a host may hold several subnets of a pool
	for _, l := range leases {
		k := holder{l.Pool, l.HostID}
		held[k] = append(held[k], l)
	}
	t := table{names: map[netip.Prefix]map[string][]address{}, ptrs: map[netip.Prefix]map[netip.Addr]ptr{}}
	for _, rec := range records {
		if rec.HostID == self {
			continue
		}
		for _, e := range rec.Entries {
			for _, l := range held[holder{rec.Pool, rec.HostID}] {
				if !l.Subnet.Contains(e.IP) {
					continue
				}
				m := t.names[rec.Pool]
				if m == nil {
					m = map[string][]address{}
					t.names[rec.Pool] = m
				}
				for _, n := range e.Names {
					m[n] = append(m[n], address{ip: e.IP, until: l.Expiry})
				}
				if e.Name != "" && ValidName(e.Name) { // another host's record: a name that cannot be packed would fail the answer
					r := t.ptrs[rec.Pool]
					if r == nil {
						r = map[netip.Addr]ptr{}
						t.ptrs[rec.Pool] = r
					}
					r[e.IP] = ptr{name: e.Name, until: l.Expiry}
				}
				break
			}
		}
	}
	return t
}
