package names

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/felt-net/felt/lease"
)

// Records is the shared store's side of the index (lease.Registry).
type Records interface {
	WatchNames(ctx context.Context, after uint64) ([]lease.NameRecord, uint64, error)
	WatchLeases(ctx context.Context, after uint64) ([]lease.Lease, uint64, error)
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

// table maps pool → name → addresses.
type table map[netip.Prefix]map[string][]address

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
		for _, a := range t[p][name] {
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

// Run watches the records and the leases (two blocking queries) until
// ctx ends, rebuilding the table after each answer.
func (x *Index) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		watch(ctx, x.log, "names", x.recs.WatchNames, func(r []lease.NameRecord) {
			x.mu.Lock()
			x.records = r
			x.mu.Unlock()
			x.rebuild()
		})
	}()
	go func() {
		defer wg.Done()
		watch(ctx, x.log, "leases", x.recs.WatchLeases, func(l []lease.Lease) {
			x.mu.Lock()
			x.leases = l
			x.mu.Unlock()
			x.rebuild()
		})
	}()
	wg.Wait()
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
	t := table{}
	for _, rec := range records {
		if rec.HostID == self {
			continue
		}
		for _, e := range rec.Entries {
			for _, l := range leases {
				if l.Pool != rec.Pool || l.HostID != rec.HostID || !l.Subnet.Contains(e.IP) {
					continue
				}
				m := t[rec.Pool]
				if m == nil {
					m = map[string][]address{}
					t[rec.Pool] = m
				}
				for _, n := range e.Names {
					m[n] = append(m[n], address{ip: e.IP, until: l.Expiry})
				}
				break
			}
		}
	}
	return t
}
