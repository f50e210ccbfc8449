package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// Hosts (each its own local state, one shared store) create and remove
// the same network at once, over and over, as docker network create/rm on
// every host together: each RequestPool gets a subnet whose lease is its
// host's and whose network record exists, no two hosts hold the same
// subnet at once, and when all is removed the shared store is empty.
func TestChurnPoolAcrossHosts(t *testing.T) {
	shared := openKV(t, filepath.Join(t.TempDir(), "shared.db"))
	reg := lease.NewRegistry(shared, "felt/", nil)
	pool := netip.MustParsePrefix("10.63.0.0/21") // 8 subnets for 6 hosts
	const hosts, rounds = 6, 25
	var held sync.Map // subnet -> host
	var wg sync.WaitGroup
	errs := make(chan error, hosts)
	for i := range hosts {
		local := openKV(t, filepath.Join(t.TempDir(), fmt.Sprintf("local%d.db", i)))
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

// A renewal that started before the pool's last ReleasePool (docker network
// rm during the periodic renewal) must not lease the released subnet again:
// nothing on this host would renew or release that lease, and its network
// record would keep every overlapping pool refused, cluster-wide.
func TestRenewRacingReleasePoolLeavesNoLease(t *testing.T) {
	s := openKV(t, filepath.Join(t.TempDir(), "db"))
	reg := lease.NewRegistry(s, "felt/", nil)
	var (
		mu    sync.Mutex
		hook  func()
		d     *ipam.Driver
		owner = lease.Owner{HostID: "host-a", PublicIP: netip.MustParseAddr("192.0.2.1")}
	)
	d = ipam.New(ipam.Config{State: state.New(s), Registry: reg, TTL: time.Hour,
		Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
			mu.Lock()
			h := hook
			hook = nil
			mu.Unlock()
			if h != nil {
				h()
			}
			return owner, nil
		}})
	resp, err := d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	mu.Lock()
	hook = func() { // the renewal is under way: docker network rm now
		go func() { released <- d.ReleasePool(ctx, &api.ReleasePoolRequest{PoolID: resp.PoolID}) }()
		select { // let it finish, unless the renewal keeps it waiting
		case err := <-released:
			released <- err
		case <-time.After(2 * time.Second):
		}
	}
	mu.Unlock()
	if err := d.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	pool := netip.MustParsePrefix("10.42.0.0/16")
	if ls, _ := reg.Leases(ctx, pool); len(ls) != 0 {
		t.Fatalf("after the pool's last release, leases remain: %+v", ls)
	}
	if n, err := reg.GetNetwork(ctx, pool); err == nil {
		t.Fatalf("after the pool's last release, its network record remains: %+v", n)
	}
}

// The last ReleasePool gives the lease back even when this host's public IP
// cannot be found at that moment (the underlay has no address): the release
// needs only the host ID. It used to return quietly with the lease and the
// network record kept, refusing every overlapping pool until the lease
// expired (a day by default), on this host too with the embedded store.
func TestReleasePoolWithoutPublicIPReleasesLease(t *testing.T) {
	s := openKV(t, filepath.Join(t.TempDir(), "db"))
	reg := lease.NewRegistry(s, "felt/", nil)
	var noIP bool
	d := ipam.New(ipam.Config{State: state.New(s), Registry: reg, TTL: time.Hour, HostID: "host-a",
		Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
			if noIP {
				return lease.Owner{}, errors.New("underlay eth0 has no IPv4 address")
			}
			return lease.Owner{HostID: "host-a", PublicIP: netip.MustParseAddr("192.0.2.1")}, nil
		}})
	resp, err := d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	noIP = true
	if err := d.ReleasePool(ctx, &api.ReleasePoolRequest{PoolID: resp.PoolID}); err != nil {
		t.Fatal(err)
	}
	pool := netip.MustParsePrefix("10.42.0.0/16")
	if ls, _ := reg.Leases(ctx, pool); len(ls) != 0 {
		t.Fatalf("leases kept: %+v", ls)
	}
	if _, err := d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/17"}); err == nil || !strings.Contains(err.Error(), "no IPv4 address") {
		t.Fatalf("an overlapping pool must now fail only for the missing IP: %v", err)
	}
}

// LeasesMissing says whether a lease this host recorded is gone from the
// store or held by another host now, by reading that one lease: false
// while it is there, true once released behind the host's back or taken by
// another host, false again after a renewal claims it back.
func TestLeasesMissing(t *testing.T) {
	s := openKV(t, filepath.Join(t.TempDir(), "db"))
	st := state.New(s)
	withFeltNetwork(t, st, testPool)
	reg := lease.NewRegistry(s, "felt/", nil)
	owner := lease.Owner{HostID: "host-a", PublicIP: netip.MustParseAddr("192.0.2.1")}
	d := ipam.New(ipam.Config{State: st, Registry: reg,
		Owner: func(context.Context, netip.Prefix) (lease.Owner, error) { return owner, nil }})
	resp, err := d.RequestPool(ctx, &api.RequestPoolRequest{Pool: testPool})
	if err != nil {
		t.Fatal(err)
	}
	pool, subnet := netip.MustParsePrefix(testPool), netip.MustParsePrefix(resp.Pool)
	missing := func(want bool, when string) {
		t.Helper()
		got, err := d.LeasesMissing(ctx)
		if err != nil || got != want {
			t.Fatalf("%s: LeasesMissing %v, %v; want %v", when, got, err, want)
		}
	}
	missing(false, "with its lease in the store")
	if err := reg.Release(ctx, pool, subnet, owner.HostID); err != nil {
		t.Fatal(err)
	}
	missing(true, "after its lease was released behind its back")
	n := lease.Network{Pool: pool, SubnetLen: subnet.Bits()}
	if _, err := reg.Acquire(ctx, lease.AcquireRequest{Network: n, Prefer: subnet,
		Owner: lease.Owner{HostID: "host-b", PublicIP: netip.MustParseAddr("192.0.2.2")}}); err != nil {
		t.Fatal(err)
	}
	missing(true, "with its subnet leased by another host")
	if err := reg.Release(ctx, pool, subnet, "host-b"); err != nil {
		t.Fatal(err)
	}
	if err := d.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	missing(false, "after a renewal claimed it back")
}
