// Package leasetest holds lease checks shared by tests that run them against
// different stores (the embedded one in unit tests, Consul in integration).
package leasetest

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
)

// RaceAcquire has hosts simulated hosts claim a subnet of pool at once and
// fails unless every one gets a subnet, no two the same, and the store then
// holds exactly that many leases: a claim must be one compare-and-set.
func RaceAcquire(t testing.TB, reg *lease.Registry, pool netip.Prefix, hosts int) {
	t.Helper()
	ctx := context.Background()
	n, err := reg.EnsureNetwork(ctx, lease.Spec{Pool: pool}, true)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]netip.Prefix, hosts)
	errs := make([]error, hosts)
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := reg.Acquire(ctx, lease.AcquireRequest{Network: n, TTL: time.Hour,
				Owner: lease.Owner{HostID: fmt.Sprintf("sim-%d", i), PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})}})
			got[i], errs[i] = l.Subnet, err
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i, s := range got {
		if errs[i] != nil {
			t.Fatalf("simulated host %d: %v", i, errs[i])
		}
		if j, dup := seen[s]; dup {
			t.Fatalf("simulated hosts %d and %d both hold %s", j, i, s)
		}
		seen[s] = i
	}
	ls, err := reg.Leases(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != hosts {
		t.Fatalf("%d leases in the store, want %d", len(ls), hosts)
	}
}
