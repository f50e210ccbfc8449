package lease_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
)

// Name records on both stores: one key per host per pool, written whole
// and deterministic, unchanged bytes not rewritten (the watch does not
// wake), an empty set deleting the key, and Release deleting it with the
// host's lease.
func TestNames(t *testing.T) {
	eachStore(t, func(t *testing.T, r *lease.Registry) {
		ctx := context.Background()
		n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
		if err != nil {
			t.Fatal(err)
		}
		l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("h1", "192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ip := l.Subnet.Addr().Next().Next()
		entries := []lease.NameEntry{{IP: ip, Names: []string{"Web", "api", "web", ""}, Name: "zz.blue"}, {IP: ip, Name: "Web.Blue."}, {IP: netip.Addr{}, Names: []string{"x"}}}
		if err := r.PutNames(ctx, pool, "h1", entries); err != nil {
			t.Fatal(err)
		}
		if err := r.PutNames(ctx, pool, "h2", []lease.NameEntry{{IP: netip.MustParseAddr("10.42.9.2"), Names: []string{"db"}}}); err != nil {
			t.Fatal(err)
		}
		recs, idx, err := r.ListNames(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 {
			t.Fatalf("%d records, want 2: %+v", len(recs), recs)
		}
		var h1 lease.NameRecord
		for _, rec := range recs {
			if rec.HostID == "h1" {
				h1 = rec
			}
		}
		if h1.Pool != pool || len(h1.Entries) != 1 || h1.Entries[0].IP != ip ||
			len(h1.Entries[0].Names) != 2 || h1.Entries[0].Names[0] != "api" || h1.Entries[0].Names[1] != "web" || h1.Entries[0].Name != "web.blue" {
			t.Fatalf("h1's record %+v, want %s: [api web], PTR web.blue", h1, ip)
		}
		// The same set again is no write: a watch from idx does not wake.
		if err := r.PutNames(ctx, pool, "h1", []lease.NameEntry{{IP: ip, Names: []string{"web", "api"}, Name: "web.blue"}}); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, next, err := r.WatchNames(wctx, idx)
		cancel()
		if err == nil && next != idx {
			t.Fatalf("an unchanged record was rewritten (index %d → %d)", idx, next)
		}
		// An empty set deletes the key.
		if err := r.PutNames(ctx, pool, "h2", nil); err != nil {
			t.Fatal(err)
		}
		recs, next, err = r.WatchNames(ctx, idx)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || recs[0].HostID != "h1" || next == idx {
			t.Fatalf("after h2's empty set: %+v (index %d → %d), want h1's record only", recs, idx, next)
		}
		// Release takes the names with the lease.
		if err := r.Release(ctx, pool, l.Subnet, "h1"); err != nil {
			t.Fatal(err)
		}
		if recs, _, err = r.ListNames(ctx); err != nil || len(recs) != 0 {
			t.Fatalf("after release: %+v, %v; want none", recs, err)
		}
	})
}

// RemoveExpired deletes the names of the host whose lease it removes.
func TestNamesGoWithExpiredLease(t *testing.T) {
	ctx := context.Background()
	r, clk := newRegistry(t)
	n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("dead", "192.0.2.1"), TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PutNames(ctx, pool, "dead", []lease.NameEntry{{IP: l.Subnet.Addr().Next().Next(), Names: []string{"web"}}}); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	ls, err := r.AllLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.RemoveExpired(ctx, ls); got != 1 {
		t.Fatalf("%d removed, want 1", got)
	}
	if recs, _, err := r.ListNames(ctx); err != nil || len(recs) != 0 {
		t.Fatalf("after expiry: %+v, %v; want none", recs, err)
	}
}
