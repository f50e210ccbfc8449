package overlay_test

// Unit tests of the Manager's reconcile loop with a fake lease source, a
// watch over it and a fake backend (fakes_test.go): no root, no namespace,
// no store. The Manager follows kernel events in the test's own namespace,
// which at most adds reconciles; nothing here counts them (the tests that
// do, in manager_dirty_test.go, turn kernel events off). Tests of what
// backends do to the kernel are in manager_test.go and the backends' tests.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// unitHost is the host ID of the Manager under test; its instance
// ("unit0000") marks no device on any machine, so the stray sweep of the
// real namespace removes nothing.
const unitHost = "unit0000-host"

// fakeBackendName is the name the fake backend is registered under.
const fakeBackendName = "fake"

// unitNetwork is this host's network in pool, holding subnet.
func unitNetwork(id, pool, subnet string) overlay.Network {
	return overlay.Network{ID: id, Pool: netip.MustParsePrefix(pool), Subnet: netip.MustParsePrefix(subnet), Backend: fakeBackendName}
}

// unitLease is a lease of subnet in pool by host, expiring at expiry (zero:
// never).
func unitLease(host, pool, subnet string, expiry time.Time) lease.Lease {
	return lease.Lease{Pool: netip.MustParsePrefix(pool), Subnet: netip.MustParsePrefix(subnet), HostID: host,
		PublicIP: netip.MustParseAddr("192.0.2.1"), Expiry: expiry}
}

// newUnitManager returns a Manager over src (and a watch of it) and b,
// closed when the test ends, with its log in logs.
func newUnitManager(t *testing.T, src *fakeLeases, b overlay.Backend, logs *syncBuffer) *overlay.Manager {
	t.Helper()
	m := overlay.NewManager(overlay.ManagerConfig{Leases: src, Watch: src.watch(), HostID: unitHost,
		Backends: overlay.NewBackends(b), Resync: time.Hour,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(m.Close)
	return m
}

// attachAndRun attaches nets to m and starts m.
func attachAndRun(t *testing.T, m *overlay.Manager, nets ...overlay.Network) {
	t.Helper()
	for _, n := range nets {
		if err := m.Attach(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}
	go m.Run(context.Background())
}

// subnets are the subnets of ls, sorted.
func subnets(ls []lease.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Subnet.String())
	}
	slices.Sort(out)
	return out
}

// waitPeers waits until the last Sync of network id had exactly the peers
// with subnets want.
func waitPeers(t *testing.T, b *fakeBackend, id string, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	waitFor(t, "a Sync of "+id+" with peers "+fmt.Sprint(want), func() bool {
		_, syncs, peers := b.state(id)
		got = subnets(peers)
		return syncs > 0 && slices.Equal(got, want)
	})
}

// Peers are the live leases of the network's pool held by other hosts:
// this host's own lease, a lease of (or inside, or around) its subnet,
// which would route the host's own containers away, other pools' leases and
// expired ones are left out, expiry judged by the lease source's clock,
// not the machine's.
func TestPeersUseTheLeaseSourceClock(t *testing.T) {
	src := newFakeLeases()
	src.offset = 24 * time.Hour // the source's clock is a day ahead
	m := newUnitManager(t, src, newFakeBackend(), &syncBuffer{})
	n := unitNetwork("net-a", "10.42.0.0/16", "10.42.1.0/24")
	now := time.Now()
	all := []lease.Lease{
		unitLease(unitHost, "10.42.0.0/16", "10.42.1.0/24", time.Time{}),           // own
		unitLease("host-b", "10.42.0.0/16", "10.42.2.0/24", time.Time{}),           // live, permanent
		unitLease("host-c", "10.42.0.0/16", "10.42.3.0/24", now.Add(48*time.Hour)), // live by both clocks
		unitLease("host-d", "10.42.0.0/16", "10.42.4.0/24", now.Add(time.Hour)),    // live by the machine's clock only
		unitLease("host-e", "10.42.0.0/16", "10.42.1.0/24", time.Time{}),           // our subnet, another host's
		unitLease("host-g", "10.42.0.0/16", "10.42.1.128/25", time.Time{}),         // inside our subnet
		unitLease("host-h", "10.42.0.0/16", "10.42.0.0/23", time.Time{}),           // around our subnet
		unitLease("host-f", "10.43.0.0/16", "10.43.5.0/24", time.Time{}),           // another pool
	}
	if got, want := subnets(m.Peers(n, all)), []string{"10.42.2.0/24", "10.42.3.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("peers %v, want %v", got, want)
	}
}

// A lease change reaches the backend's Sync with the network's peers:
// this host's own lease and expired ones left out, and other pools' leases
// to the other network.
func TestLeaseChangeReachesSync(t *testing.T) {
	now := time.Now()
	src := newFakeLeases(
		unitLease(unitHost, "10.42.0.0/16", "10.42.1.0/24", time.Time{}),
		unitLease("host-b", "10.42.0.0/16", "10.42.2.0/24", time.Time{}),
		unitLease("host-c", "10.42.0.0/16", "10.42.3.0/24", now.Add(-time.Minute)), // expired
		unitLease("host-b", "10.43.0.0/16", "10.43.2.0/24", time.Time{}),
	)
	b := newFakeBackend()
	m := newUnitManager(t, src, b, &syncBuffer{})
	n, other := unitNetwork("net-a", "10.42.0.0/16", "10.42.1.0/24"), unitNetwork("net-b", "10.43.0.0/16", "10.43.1.0/24")
	attachAndRun(t, m, n, other)
	waitPeers(t, b, n.ID, "10.42.2.0/24")
	waitPeers(t, b, other.ID, "10.43.2.0/24")

	// host-d arrives, host-b leaves, host-c comes back to life.
	src.set(
		unitLease(unitHost, "10.42.0.0/16", "10.42.1.0/24", time.Time{}),
		unitLease("host-c", "10.42.0.0/16", "10.42.3.0/24", now.Add(time.Hour)),
		unitLease("host-d", "10.42.0.0/16", "10.42.4.0/24", time.Time{}),
		unitLease("host-b", "10.43.0.0/16", "10.43.2.0/24", time.Time{}),
	)
	waitPeers(t, b, n.ID, "10.42.3.0/24", "10.42.4.0/24")
	waitPeers(t, b, other.ID, "10.43.2.0/24")
}

// A peer whose lease expires is dropped when it expires, by the expiry
// timer: no lease change, no resync (an hour away) comes to do it. Its
// lease is then removed from the source as housekeeping.
func TestExpiryTimerDropsDeadPeer(t *testing.T) {
	dies := time.Now().Add(time.Second)
	dead := unitLease("host-c", "10.42.0.0/16", "10.42.3.0/24", dies)
	src := newFakeLeases(
		unitLease(unitHost, "10.42.0.0/16", "10.42.1.0/24", time.Time{}),
		unitLease("host-b", "10.42.0.0/16", "10.42.2.0/24", time.Time{}),
		dead,
	)
	b := newFakeBackend()
	logs := &syncBuffer{}
	m := newUnitManager(t, src, b, logs)
	n := unitNetwork("net-a", "10.42.0.0/16", "10.42.1.0/24")
	attachAndRun(t, m, n)
	waitPeers(t, b, n.ID, "10.42.2.0/24", "10.42.3.0/24")
	if time.Now().After(dies) {
		t.Skip("the lease expired before it was synced (slow machine)")
	}
	waitPeers(t, b, n.ID, "10.42.2.0/24")
	if !logs.contains("a lease expired; reconciling") {
		t.Fatalf("the dead peer was dropped, but not by the expiry timer:\n%s", logs)
	}
	waitFor(t, "the expired lease removed from the source", func() bool {
		return slices.ContainsFunc(src.removedLeases(), func(l lease.Lease) bool { return l.Subnet == dead.Subnet })
	})
}

// While the store fails, the watch answers nothing (it retries inside, as
// lease.Watch does), so until leases were read once the backend only
// repairs the device (no Sync that would remove every entry); once the
// store answers, the leases, including changes made meanwhile, reach Sync.
// An outage after that leaves the entries as they were.
func TestStoreOutage(t *testing.T) {
	src := newFakeLeases(unitLease("host-b", "10.42.0.0/16", "10.42.2.0/24", time.Time{}))
	src.fail(errors.New("injected: store unreachable"))
	b := newFakeBackend()
	m := newUnitManager(t, src, b, &syncBuffer{})
	ctx := context.Background()
	n := unitNetwork("net-a", "10.42.0.0/16", "10.42.1.0/24")
	attachAndRun(t, m, n)
	waitFor(t, "the watch to fail a few reads", func() bool { return src.failedReads() >= 3 })
	m.ReconcileAll(ctx)
	if setups, syncs, _ := b.state(n.ID); setups == 0 || syncs != 0 {
		t.Fatalf("before any lease was read: %d Setups, %d Syncs; want Setups only", setups, syncs)
	}
	if m.InSync() {
		t.Fatal("InSync before any lease was read")
	}

	src.set(unitLease("host-b", "10.42.0.0/16", "10.42.2.0/24", time.Time{}),
		unitLease("host-c", "10.42.0.0/16", "10.42.3.0/24", time.Time{}))
	src.fail(nil)
	waitPeers(t, b, n.ID, "10.42.2.0/24", "10.42.3.0/24")
	waitFor(t, "InSync once the leases were read", m.InSync)

	// Failing again after it worked: the entries stay as they are, and
	// once the store answers again its leases reach Sync.
	failed := src.failedReads()
	src.fail(errors.New("injected: store unreachable again"))
	src.set(unitLease("host-c", "10.42.0.0/16", "10.42.3.0/24", time.Time{}))
	waitFor(t, "the watch to fail again", func() bool { return src.failedReads() > failed })
	m.ReconcileAll(ctx)
	if _, _, peers := b.state(n.ID); !slices.Equal(subnets(peers), []string{"10.42.2.0/24", "10.42.3.0/24"}) {
		t.Fatalf("while the store fails, peers %v; want the last known ones", subnets(peers))
	}
	src.fail(nil)
	waitPeers(t, b, n.ID, "10.42.3.0/24")
}

// After Detach, no reconcile touches the network: a lease change and a
// Kick sync the networks still attached, not it.
func TestDetachStopsReconciles(t *testing.T) {
	src := newFakeLeases(
		unitLease("host-b", "10.42.0.0/16", "10.42.2.0/24", time.Time{}),
		unitLease("host-b", "10.43.0.0/16", "10.43.2.0/24", time.Time{}),
	)
	b := newFakeBackend()
	m := newUnitManager(t, src, b, &syncBuffer{})
	ctx := context.Background()
	gone, stays := unitNetwork("net-gone", "10.42.0.0/16", "10.42.1.0/24"), unitNetwork("net-stays", "10.43.0.0/16", "10.43.1.0/24")
	attachAndRun(t, m, gone, stays)
	waitPeers(t, b, gone.ID, "10.42.2.0/24")
	waitPeers(t, b, stays.ID, "10.43.2.0/24")
	if err := m.Detach(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if !b.tornDown(gone.ID) {
		t.Fatal("Detach did not tear the network down")
	}
	setups, syncs, _ := b.state(gone.ID)

	src.set(
		unitLease("host-b", "10.42.0.0/16", "10.42.2.0/24", time.Time{}),
		unitLease("host-c", "10.42.0.0/16", "10.42.3.0/24", time.Time{}),
		unitLease("host-b", "10.43.0.0/16", "10.43.2.0/24", time.Time{}),
		unitLease("host-c", "10.43.0.0/16", "10.43.3.0/24", time.Time{}),
	)
	waitPeers(t, b, stays.ID, "10.43.2.0/24", "10.43.3.0/24")
	m.Kick()
	m.ReconcileAll(ctx)
	if s, y, _ := b.state(gone.ID); s != setups || y != syncs {
		t.Fatalf("after Detach the network was set up %d and synced %d more times", s-setups, y-syncs)
	}
}
