package lease_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
)

// subnets are the subnets of ls, sorted.
func subnets(ls []lease.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Subnet.String())
	}
	slices.Sort(out)
	return out
}

type watched struct {
	leases []lease.Lease
	index  uint64
	err    error
}

func startWatch(ctx context.Context, r *lease.Registry, after uint64) <-chan watched {
	ch := make(chan watched, 1)
	go func() {
		ls, index, err := r.WatchLeases(ctx, after)
		ch <- watched{ls, index, err}
	}()
	return ch
}

// WatchLeases is one blocking query for the leases of every pool: index 0
// answers at once, a known index blocks until a lease changes (in any
// pool), and a change between two calls is not missed. AllLeases answers
// the same without waiting. On each store.
func TestWatchLeases(t *testing.T) {
	eachStore(t, func(t *testing.T, r *lease.Registry) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		acquire := func(p netip.Prefix, host, ip string) lease.Lease {
			t.Helper()
			n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: p})
			if err != nil {
				t.Fatal(err)
			}
			l, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner(host, ip), TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		a := acquire(pool, "a", "192.0.2.1")
		ls, index, err := r.WatchLeases(ctx, 0)
		if err != nil || index == 0 || !slices.Equal(subnets(ls), []string{a.Subnet.String()}) {
			t.Fatalf("first watch: %v, index %d, %v; want a's lease at once, index > 0", subnets(ls), index, err)
		}

		ch := startWatch(ctx, r, index)
		select {
		case w := <-ch:
			t.Fatalf("watch returned %v, %v without any change", subnets(w.leases), w.err)
		case <-time.After(300 * time.Millisecond):
		}
		b := acquire(netip.MustParsePrefix("10.43.0.0/16"), "b", "192.0.2.2") // another pool
		w := <-ch
		want := []string{a.Subnet.String(), b.Subnet.String()}
		slices.Sort(want)
		if w.err != nil || w.index <= index || !slices.Equal(subnets(w.leases), want) {
			t.Fatalf("after b's lease: %v, index %d (before %d), %v; want %v", subnets(w.leases), w.index, index, w.err, want)
		}
		all, err := r.AllLeases(ctx)
		if err != nil || !slices.Equal(subnets(all), want) {
			t.Fatalf("AllLeases: %v, %v; want %v", subnets(all), err, want)
		}

		// Released between two watches: the next one answers at once.
		if err := r.Release(ctx, b.Pool, b.Subnet, "b"); err != nil {
			t.Fatal(err)
		}
		select {
		case w2 := <-startWatch(ctx, r, w.index):
			if w2.err != nil || !slices.Equal(subnets(w2.leases), []string{a.Subnet.String()}) {
				t.Fatalf("after b's release: %v, %v; want a's lease only", subnets(w2.leases), w2.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a release between two watches was missed")
		}

		cancel()
		if w := <-startWatch(ctx, r, w.index+1000); w.err == nil {
			t.Fatal("a watch with its context ended did not fail")
		}
	})
}

// rewound is a store whose index went backwards: Consul restored from an
// older snapshot.
type rewound struct{ kv.Store }

func (s rewound) Wait(ctx context.Context, prefix string, index uint64) ([]kv.Pair, uint64, error) {
	pairs, _, err := s.Store.Wait(ctx, prefix, 0)
	return pairs, 1, err
}

// An index that went backwards comes back as 0, so the caller's next watch
// is a fresh start rather than a wait for an index the store may never
// reach again.
func TestWatchLeasesIndexBackwards(t *testing.T) {
	r := lease.NewRegistry(rewound{newStore(t)}, "felt/", nil)
	if _, index, err := r.WatchLeases(context.Background(), 100); err != nil || index != 0 {
		t.Fatalf("index %d, %v; want 0", index, err)
	}
}

// A record that does not parse, or not at its own key, is skipped, by the watch and the listings:
// one bad key must not stop a host from programming all the others.
func TestUnreadableLeaseSkipped(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	r := lease.NewRegistry(s, "felt/", nil)
	n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	good, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: owner("a", "192.0.2.1")})
	if err != nil {
		t.Fatal(err)
	}
	// The bad records sit at subnets other than the good lease's (it is
	// random: it was 10.42.250.0/24 once, and the test overwrote it).
	bad := []string{"10.42.250.0", "10.42.251.0", "10.42.252.0"}
	bad = slices.DeleteFunc(bad, func(a string) bool { return a == good.Subnet.Addr().String() })
	// The third claims the good lease's subnet from another key: a record
	// away from its own key is not a lease, or it could lease a subnet twice.
	dup, err := json.Marshal(lease.Lease{Pool: pool, Subnet: good.Subnet, HostID: "b", PublicIP: netip.MustParseAddr("192.0.2.2")})
	if err != nil {
		t.Fatal(err)
	}
	for i, value := range []string{"{not json", `{"hostID":"no subnet"}`, string(dup)} {
		key := "felt/leases/10.42.0.0-16/" + bad[i] + "-24"
		if err := s.Put(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{good.Subnet.String()}
	ls, _, err := r.WatchLeases(ctx, 0)
	if err != nil || !slices.Equal(subnets(ls), want) {
		t.Fatalf("WatchLeases: %v, %v; want %v", subnets(ls), err, want)
	}
	if ls, err := r.AllLeases(ctx); err != nil || !slices.Equal(subnets(ls), want) {
		t.Fatalf("AllLeases: %v, %v; want %v", subnets(ls), err, want)
	}
	if ls, err := r.Leases(ctx, pool); err != nil || !slices.Equal(subnets(ls), want) {
		t.Fatalf("Leases: %v, %v; want %v", subnets(ls), err, want)
	}
}
