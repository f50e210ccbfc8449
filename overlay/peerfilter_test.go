package overlay_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// refusedLeases are leases of deltaPool that overlay.CheckPeer refuses,
// one per reason, by host.
func refusedLeases() []lease.Lease {
	at := func(host, subnet, ip string) lease.Lease {
		l := unitLease(host, deltaPool, subnet, time.Time{})
		l.PublicIP = netip.Addr{}
		if ip != "" {
			l.PublicIP = netip.MustParseAddr(ip)
		}
		return l
	}
	return []lease.Lease{
		at("bad-lo", "10.42.200.0/24", "127.0.0.1"),
		at("bad-mcast", "10.42.201.0/24", "224.0.0.5"),
		at("bad-zero", "10.42.202.0/24", "0.0.0.0"),
		at("bad-bcast", "10.42.203.0/24", "255.255.255.255"),
		at("bad-pool", "10.42.204.0/24", "10.42.7.7"), // inside the pool
		at("bad-none", "10.42.205.0/24", ""),
		at("bad-v6", "10.42.206.0/24", "2001:db8::1"),
		at("bad-bits", "10.42.207.1/24", "192.0.2.9"), // host bits set
		at("bad-ours", "10.42.1.128/25", "192.0.2.9"), // inside this host's subnet
	}
}

// A lease CheckPeer refuses (a public IP no host can have, a subnet that
// must not be routed) is left out of the network's peers before any
// backend sees it: no Sync and no SyncPeers gets it, the network is in
// sync (nothing failed: deltas stay on), and each refused lease is logged
// once, not at every pass. A peer whose public IP turns bad leaves as a
// delta, logged once too.
func TestRefusedLeasesSkipped(t *testing.T) {
	d := &deltaBed{b: newDeltaBackend(), n: unitNetwork("net-a", deltaPool, "10.42.1.0/24")}
	for i := range 5 {
		d.leases = append(d.leases, deltaPeer(i))
	}
	bad := refusedLeases()
	d.src = newFakeLeases(append(slices.Clone(d.leases), bad...)...)
	logs := &syncBuffer{}
	d.m = overlay.WithoutKernelEvents(newUnitManager(t, d.src, d.b, logs))
	attachAndRun(t, d.m, d.n)
	d.waitPeers(t) // the good ones only
	waitFor(t, "the network in sync", d.m.InSync)
	if got := subnets(d.m.Peers(d.n, append(slices.Clone(d.leases), bad...))); !slices.Equal(got, subnets(d.leases)) {
		t.Fatalf("Peers %v, want the accepted leases' %v", got, subnets(d.leases))
	}

	// More passes: full ones (Kick) and a delta (a peer added).
	for range 3 {
		d.m.Kick()
		time.Sleep(50 * time.Millisecond)
	}
	full := d.b.fullSyncs(d.n.ID)
	added := deltaPeer(5)
	d.leases = append(slices.Clone(d.leases), added)
	d.src.set(append(slices.Clone(d.leases), bad...)...)
	d.waitPeers(t)
	waitFor(t, "the network in sync", d.m.InSync)
	if got := d.b.fullSyncs(d.n.ID); got != full {
		t.Errorf("a peer added beside refused leases made %d full Syncs, want a delta", got-full)
	}
	for _, c := range d.b.calls() {
		for _, l := range bad {
			if slices.Contains(c.changed, l.Subnet.String()) {
				t.Errorf("SyncPeers got the refused lease of %s", l.HostID)
			}
		}
	}
	for _, l := range bad {
		if got := strings.Count(logs.String(), "host="+l.HostID+" "); got != 1 {
			t.Errorf("the refused lease of %s logged %d times, want once\n%s", l.HostID, got, logs)
		}
	}

	// A peer's public IP turns bad: its subnet goes, as a delta.
	moved := slices.Clone(d.leases)
	gone := moved[2]
	moved[2].PublicIP = netip.MustParseAddr("127.0.0.2")
	d.src.set(append(slices.Clone(moved), bad...)...)
	d.leases = slices.Delete(slices.Clone(d.leases), 2, 3)
	d.waitPeers(t)
	waitFor(t, "the network in sync", d.m.InSync)
	calls := d.b.calls()
	if last := calls[len(calls)-1]; !slices.Equal(last.removed, []string{gone.Subnet.String()}) || len(last.changed) != 0 {
		t.Errorf("a peer's IP turned bad: SyncPeers(changed %v, removed %v), want %s removed", last.changed, last.removed, gone.Subnet)
	}
	if got := d.b.fullSyncs(d.n.ID); got != full {
		t.Errorf("a peer turning bad made %d full Syncs, want a delta", got-full)
	}
	d.m.Kick()
	waitFor(t, "a full Sync", func() bool { return d.b.fullSyncs(d.n.ID) > full })
	if got := strings.Count(logs.String(), "host="+gone.HostID+" "); got != 1 {
		t.Errorf("%s's refused lease logged %d times, want once", gone.HostID, got)
	}
	if !strings.Contains(logs.String(), `why="peer `+gone.HostID) || !strings.Contains(logs.String(), "loopback") {
		t.Errorf("the refusal does not say why:\n%s", logs)
	}
}

// checkingBackend refuses, as a PeerChecker, the leases of hosts named
// "bad-…" (vxlan refuses a lease whose VTEP MAC is unusable).
type checkingBackend struct{ *deltaBackend }

func (checkingBackend) CheckPeerData(_ overlay.Network, l lease.Lease) error {
	if strings.HasPrefix(l.HostID, "bad-") {
		return fmt.Errorf("peer %s: unusable backend data", l.HostID)
	}
	return nil
}

// A lease the backend's own check refuses is left out as CheckPeer's
// refusals are: never handed to Sync or SyncPeers, logged once, no failure.
func TestBackendRefusedLeasesSkipped(t *testing.T) {
	d := &deltaBed{b: newDeltaBackend(), n: unitNetwork("net-a", deltaPool, "10.42.1.0/24")}
	for i := range 3 {
		d.leases = append(d.leases, deltaPeer(i))
	}
	bad := unitLease("bad-mac", deltaPool, "10.42.9.0/28", time.Time{})
	d.src = newFakeLeases(append(slices.Clone(d.leases), bad)...)
	logs := &syncBuffer{}
	d.m = overlay.WithoutKernelEvents(newUnitManager(t, d.src, checkingBackend{d.b}, logs))
	attachAndRun(t, d.m, d.n)
	d.waitPeers(t)
	waitFor(t, "the network in sync", d.m.InSync)
	for range 2 {
		d.m.Kick()
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, "the network in sync", d.m.InSync)
	if got := subnets(d.m.Peers(d.n, append(slices.Clone(d.leases), bad))); !slices.Equal(got, subnets(d.leases)) {
		t.Fatalf("Peers %v, want the accepted leases' %v", got, subnets(d.leases))
	}
	if got := strings.Count(logs.String(), "host=bad-mac "); got != 1 {
		t.Errorf("the refused lease logged %d times, want once\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), "unusable backend data") {
		t.Errorf("the refusal does not say why:\n%s", logs)
	}
}
