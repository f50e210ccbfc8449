package names

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
)

// runRecords is a store whose names answer once and then block, and whose
// leases the test changes (a renewal) while it counts the reads.
type runRecords struct {
	mu     sync.Mutex
	leases []lease.Lease
	reads  int
	recs   []lease.NameRecord
	wake   chan struct{}
}

func (r *runRecords) WatchNames(ctx context.Context, after uint64) ([]lease.NameRecord, uint64, error) {
	if after == 0 {
		return r.recs, 1, nil
	}
	select {
	case <-r.wake: // an answer that changes nothing (nil channel: never)
		return r.recs, after + 1, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

func (r *runRecords) readCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reads
}

func (r *runRecords) Leases(_ context.Context, pool netip.Prefix) ([]lease.Lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	var out []lease.Lease
	for _, l := range r.leases {
		if l.Pool == pool {
			out = append(out, l)
		}
	}
	return out, nil
}

func (r *runRecords) Now() time.Time { return time.Now() }

func (r *runRecords) setExpiry(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leases[0].Expiry = at
}

// The leases behind the names are read, not watched: the index reads
// them again just before the earliest one expires, so a renewal (which
// changes no name record) keeps the names, and it does not read them on
// every lease change in the cluster.
func TestIndexRunRereadsLeasesBeforeTheyExpire(t *testing.T) {
	r := &runRecords{
		recs:   []lease.NameRecord{{Pool: blue, HostID: "h2", Entries: []lease.NameEntry{{IP: ipWeb, Names: []string{"web"}}}}},
		leases: []lease.Lease{{Pool: blue, Subnet: h2blue, HostID: "h2", Expiry: time.Now().Add(2500 * time.Millisecond)}},
	}
	x := NewIndex(r, "h1", nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(5 * time.Second)
	for ips, _ := x.Lookup([]netip.Prefix{blue}, "web", time.Now()); len(ips) == 0; ips, _ = x.Lookup([]netip.Prefix{blue}, "web", time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("web never resolved")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.setExpiry(time.Now().Add(time.Hour)) // h2 renews its lease
	time.Sleep(3 * time.Second)            // past the first expiry
	if ips, _ := x.Lookup([]netip.Prefix{blue}, "web", time.Now()); len(ips) != 1 {
		t.Fatalf("web lost after its host renewed the lease: %v", ips)
	}
	r.mu.Lock()
	reads := r.reads
	r.mu.Unlock()
	if reads < 2 || reads > 4 {
		t.Errorf("leases read %d times in 3 s; want a read at start and one before the expiry", reads)
	}
}

// A names answer that changes no record (Consul moves a quiet prefix's
// index with writes elsewhere: every lease change) reads no leases, and the
// leases read are only those of pools other hosts have names in.
func TestIndexReadsLeasesOnlyForChangedNames(t *testing.T) {
	red := netip.MustParsePrefix("10.99.0.0/16")
	r := &runRecords{
		recs: []lease.NameRecord{
			{Pool: blue, HostID: "h2", Entries: []lease.NameEntry{{IP: ipWeb, Names: []string{"web"}}}},
			{Pool: red, HostID: "h1", Entries: []lease.NameEntry{{IP: netip.MustParseAddr("10.99.1.2"), Names: []string{"mine"}}}},
		},
		leases: []lease.Lease{{Pool: blue, Subnet: h2blue, HostID: "h2"}},
		wake:   make(chan struct{}),
	}
	x := NewIndex(r, "h1", nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for ips, _ := x.Lookup([]netip.Prefix{blue}, "web", time.Now()); len(ips) == 0; ips, _ = x.Lookup([]netip.Prefix{blue}, "web", time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("web never resolved")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := r.readCount(); n != 1 {
		t.Fatalf("%d lease reads at start; want 1 (blue only: red holds only this host's names)", n)
	}
	for range 5 {
		r.wake <- struct{}{}
	}
	time.Sleep(300 * time.Millisecond)
	if n := r.readCount(); n != 1 {
		t.Errorf("%d lease reads after 5 answers that changed nothing; want still 1", n)
	}
}
