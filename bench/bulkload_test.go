package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
)

// The bulk loader writes simulated hosts' leases straight into the store:
// each one create-if-absent (CAS at index 0) of the record Acquire would
// write for simRequest, at the key Acquire would write it to. It exists
// because Acquire lists the whole pool before each claim (O(leases)), so
// 10,000 joins through it take twenty minutes: the scale part loads most
// leases this way, then times Acquire itself apart. What felt's hosts see
// (one new record under the pool per write) is the same either way.
//
// lease keeps its key layout to itself (Registry); leaseKey copies it
// (lease/registry.go: <prefix>leases/<pool>/<subnet>, prefixes as
// ipnet.Key). checkLoaded reads the leases back through the Registry, so a
// layout that drifted fails the part instead of measuring nothing.

// leaseKey is where lease.Registry keeps the lease of subnet in pool.
func leaseKey(prefix string, pool, subnet netip.Prefix) string {
	return prefix + "leases/" + ipnet.Key(pool) + "/" + ipnet.Key(subnet)
}

// simLease is simulated host i's lease of subnet, as Acquire writes it for
// simRequest(n, i) at now.
func simLease(n lease.Network, i int, subnet netip.Prefix, now time.Time) lease.Lease {
	req := simRequest(n, i)
	return lease.Lease{Pool: n.Pool, Subnet: subnet, HostID: req.Owner.HostID, PublicIP: req.Owner.PublicIP,
		BackendData: req.Owner.BackendData, Expiry: now.Add(req.TTL)}
}

// subnetSeq hands out the pool's subnets in address order, skipping those
// taken (leased by real hosts or by Acquire, at random places). Safe for
// concurrent use.
type subnetSeq struct {
	mu    sync.Mutex
	pool  netip.Prefix
	bits  int
	next  uint64
	taken map[netip.Prefix]bool
}

func newSubnetSeq(pool netip.Prefix, bits int) *subnetSeq {
	return &subnetSeq{pool: pool, bits: bits, taken: map[netip.Prefix]bool{}}
}

// markTaken records subnets leased by someone else.
func (q *subnetSeq) markTaken(ls []lease.Lease) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, l := range ls {
		q.taken[l.Subnet] = true
	}
}

// take returns the next free subnet and marks it taken.
func (q *subnetSeq) take() (netip.Prefix, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	total := uint64(1) << (q.bits - q.pool.Bits())
	for ; q.next < total; q.next++ {
		base := q.pool.Masked().Addr().As4()
		v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
		v += uint32(q.next) << (32 - q.bits)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), q.bits)
		if !q.taken[p] {
			q.taken[p] = true
			q.next++
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("pool %s: no /%d left for the bulk loader", q.pool, q.bits)
}

// putSimLease writes simulated host i's lease of the next free subnet,
// create-if-absent; a subnet someone took meanwhile is skipped.
func putSimLease(ctx context.Context, store kv.Store, prefix string, n lease.Network, q *subnetSeq, i int) (netip.Prefix, error) {
	for {
		subnet, err := q.take()
		if err != nil {
			return netip.Prefix{}, err
		}
		val, err := json.Marshal(simLease(n, i, subnet, time.Now()))
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("simulated lease %d: %w", i, err)
		}
		err = store.CAS(ctx, leaseKey(prefix, n.Pool, subnet), val, 0)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("simulated lease %d (%s): %w", i, subnet, err)
		}
		return subnet, nil
	}
}

// bulkLoad writes simulated hosts from..to-1's leases with workers
// writers and says when the last write finished.
func bulkLoad(ctx context.Context, store kv.Store, prefix string, n lease.Network, q *subnetSeq, from, to, workers int) (time.Time, error) {
	var last time.Time
	var mu sync.Mutex
	err := forEach(from, to, workers, func(i int) error {
		if _, err := putSimLease(ctx, store, prefix, n, q, i); err != nil {
			return err
		}
		mu.Lock()
		last = time.Now()
		mu.Unlock()
		return nil
	})
	return last, err
}

// forEach runs fn(i) for i in from..to-1 on workers goroutines, stopping
// at the first error.
func forEach(from, to, workers int, fn func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := from; i < to; i++ {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// checkLoaded reads the pool's leases through the Registry and fails
// unless want of them are the simulated hosts', readable: the bulk
// loader's records are what lease reads.
func checkLoaded(ctx context.Context, reg *lease.Registry, pool netip.Prefix, want int) ([]lease.Lease, error) {
	ls, err := reg.Leases(ctx, pool)
	if err != nil {
		return nil, err
	}
	sim := 0
	for _, l := range ls {
		if len(l.HostID) > 10 && l.HostID[:10] == "bench-sim-" && l.PublicIP.IsValid() && len(l.BackendData) > 0 {
			sim++
		}
	}
	if sim != want {
		return ls, fmt.Errorf("pool %s: %d simulated leases read back through lease.Registry, want %d", pool, sim, want)
	}
	return ls, nil
}
