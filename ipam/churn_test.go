package ipam_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// Hosts (each its own local state, one shared store) create and remove
// the same network at once, over and over, as docker network create/rm on
// every host together: each RequestPool gets a subnet whose lease is its
// host's and whose network record exists, no two hosts hold the same
// subnet at once, and when all is removed the shared store is empty.
func TestChurnPoolAcrossHosts(t *testing.T) {
	shared, err := boltkv.Open(filepath.Join(t.TempDir(), "shared.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shared.Close() })
	reg := lease.NewRegistry(shared, "felt/", nil)
	pool := netip.MustParsePrefix("10.63.0.0/21") // 8 subnets for 6 hosts
	const hosts, rounds = 6, 25
	var held sync.Map // subnet -> host
	var wg sync.WaitGroup
	errs := make(chan error, hosts)
	for i := range hosts {
		local, err := boltkv.Open(filepath.Join(t.TempDir(), fmt.Sprintf("local%d.db", i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { local.Close() })
		host := fmt.Sprintf("host-%d", i)
		st := state.New(local)
		withFeltNetwork(t, st, pool.String())
		d := ipam.New(ipam.Config{State: st, Registry: reg, TTL: time.Hour, HostID: host,
			Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
				return lease.Owner{HostID: host, PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})}, nil
			}})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range rounds {
				resp, err := d.RequestPool(ctx, &api.RequestPoolRequest{Pool: pool.String()})
				if err != nil {
					errs <- fmt.Errorf("%s round %d: RequestPool: %w", host, round, err)
					return
				}
				sub := netip.MustParsePrefix(resp.Pool)
				if other, dup := held.LoadOrStore(sub, host); dup {
					errs <- fmt.Errorf("%s round %d: got %s, held by %s", host, round, sub, other)
					return
				}
				ls, err := reg.Leases(ctx, pool)
				mine := false
				for _, l := range ls {
					mine = mine || (l.Subnet == sub && l.HostID == host)
				}
				if _, nerr := reg.GetNetwork(ctx, pool); err != nil || nerr != nil || !mine {
					errs <- fmt.Errorf("%s round %d: subnet %s: lease mine %v (%v), record: %v", host, round, sub, mine, err, nerr)
					return
				}
				if _, err := d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()}); err != nil {
					errs <- fmt.Errorf("%s round %d: RequestAddress: %w", host, round, err)
					return
				}
				held.Delete(sub)
				if err := d.ReleasePool(ctx, &api.ReleasePoolRequest{PoolID: resp.PoolID}); err != nil {
					errs <- fmt.Errorf("%s round %d: ReleasePool: %w", host, round, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if pairs, _, err := shared.List(ctx, "felt/"); err != nil || len(pairs) != 0 {
		t.Fatalf("left in the shared store: %d keys (%v)", len(pairs), err)
	}
}
