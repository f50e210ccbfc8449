// Package leasetest holds lease checks shared by tests that run them against
// different stores (the embedded one in unit tests, Consul in integration).
package leasetest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/lease"
)

// RaceAcquire has hosts simulated hosts claim a subnet of pool at once and
// fails unless every one gets a subnet, no two the same, and the store then
// holds exactly that many leases: a claim must be one compare-and-set.
func RaceAcquire(t testing.TB, reg *lease.Registry, pool netip.Prefix, hosts int) {
	t.Helper()
	ctx := context.Background()
	n, err := reg.SettleNetwork(ctx, lease.Spec{Backends: Backends, Pool: pool})
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

// Reincarnation checks the rule "one public IP is one host, in a pool": a
// host whose state was wiped comes back with a new host ID but the same
// public IP, and takes its old lease over (same subnet, its own host ID and
// VTEP MAC) instead of leasing a second subnet beside it; a peer's lease is
// left alone; an old lease that does not fit the request is removed.
func Reincarnation(t testing.TB, reg *lease.Registry, pool netip.Prefix) {
	t.Helper()
	ctx := context.Background()
	n, err := reg.SettleNetwork(ctx, lease.Spec{Backends: Backends, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	ip := func(last byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, last}) }
	acquire := func(host string, pub netip.Addr, mac string, within netip.Prefix) lease.Lease {
		t.Helper()
		l, err := reg.Acquire(ctx, lease.AcquireRequest{Network: n, TTL: 24 * time.Hour, Within: within,
			Owner: lease.Owner{HostID: host, PublicIP: pub, BackendData: vtepData(mac)}})
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		return l
	}
	leases := func() map[netip.Prefix]lease.Lease {
		t.Helper()
		ls, err := reg.Leases(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		m := map[netip.Prefix]lease.Lease{}
		for _, l := range ls {
			m[l.Subnet] = l
		}
		return m
	}

	old := acquire("old-incarnation", ip(1), "02:00:00:00:00:01", netip.Prefix{})
	peer := acquire("peer", ip(2), "02:00:00:00:00:02", netip.Prefix{})
	now := acquire("new-incarnation", ip(1), "02:00:00:00:00:03", netip.Prefix{})
	if now.Subnet != old.Subnet || now.HostID != "new-incarnation" || string(now.BackendData) != string(vtepData("02:00:00:00:00:03")) {
		t.Fatalf("same public IP, new host ID: got %+v, want the old lease %s taken over with the new host ID and VTEP MAC", now, old.Subnet)
	}
	got := leases()
	if len(got) != 2 || got[peer.Subnet].HostID != "peer" || got[old.Subnet].HostID != "new-incarnation" {
		t.Fatalf("leases %v: want the peer's and the taken-over one only", got)
	}

	// The next incarnation asks for a range that excludes the old subnet:
	// the old lease goes, a new one is taken inside the range.
	var within netip.Prefix
	for i := uint64(0); i < ipnet.Subnets(pool, n.SubnetLen); i++ {
		if s := ipnet.Subnet(pool, n.SubnetLen, i); s != old.Subnet && s != peer.Subnet {
			within = s
			break
		}
	}
	third := acquire("third-incarnation", ip(1), "02:00:00:00:00:04", within)
	if third.Subnet != within {
		t.Fatalf("got %s, want %s (inside --ip-range)", third.Subnet, within)
	}
	got = leases()
	if _, ok := got[old.Subnet]; ok || len(got) != 2 {
		t.Fatalf("leases %v: the earlier incarnation's lease %s is still there", got, old.Subnet)
	}

	// A peer whose IP changes to one that a stale lease still names (a
	// DHCP address handed on): the stale lease goes, the peer keeps its own.
	acquire("peer", ip(1), "02:00:00:00:00:02", netip.Prefix{})
	got = leases()
	if len(got) != 1 || got[peer.Subnet].HostID != "peer" || got[peer.Subnet].PublicIP != ip(1) {
		t.Fatalf("leases %v: want only the peer's %s, now with %s", got, peer.Subnet, ip(1))
	}
}

// ChurnOnePool has hosts simulated hosts create the network of pool, take a
// lease and release it, rounds times each, all at once: the way many hosts
// run and remove one network together. While a host holds its lease the
// network record must exist with the VNI the host got, and at the end
// nothing may be left: no lease, no record, no VNI claim.
func ChurnOnePool(t testing.TB, reg *lease.Registry, pool netip.Prefix, hosts, rounds int) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, hosts)
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := lease.Owner{HostID: fmt.Sprintf("churn-%d", i), PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})}
			for round := range rounds {
				n, err := reg.SettleNetwork(ctx, lease.Spec{Backends: Backends, Pool: pool, Backend: "vxlan"})
				if err != nil {
					errs <- fmt.Errorf("host %d round %d: ensure: %w", i, round, err)
					return
				}
				l, err := reg.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: own, TTL: time.Hour})
				if err != nil {
					errs <- fmt.Errorf("host %d round %d: acquire: %w", i, round, err)
					return
				}
				now, err := reg.GetNetwork(ctx, pool)
				if err != nil || now.VNI != n.VNI {
					errs <- fmt.Errorf("host %d round %d: holds lease %s with VNI %d; record %+v, %v", i, round, l.Subnet, n.VNI, now, err)
					return
				}
				if err := reg.Release(ctx, pool, l.Subnet, own.HostID); err != nil {
					errs <- fmt.Errorf("host %d round %d: release: %w", i, round, err)
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
	if t.Failed() {
		return
	}
	left, err := reg.DeleteAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d keys left after every host released its lease", left)
	}
}

// Backends stands in for the overlay's backend registry in tests of lease
// alone, with the standard backends' needs: "vxlan" (the default) needs a
// VNI, "udp" defaults to port 8285, "host-gw" needs neither.
var Backends lease.Backends = backends{}

type backends struct{}

func (backends) Default() string             { return "vxlan" }
func (backends) NeedsVNI(name string) bool   { return name == "vxlan" }
func (backends) DefaultPort(name string) int { return map[string]int{"udp": 8285}[name] }

// vtepData is backend data as the vxlan backend publishes it.
func vtepData(mac string) json.RawMessage { return json.RawMessage(`{"vtepMAC":"` + mac + `"}`) }
