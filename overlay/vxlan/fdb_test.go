package vxlan_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/vxlan"
	"github.com/felt-net/felt/testkit/testbed"
)

// fdbDsts lists the destinations of h's VTEP's FDB entries for mac.
func fdbDsts(t *testing.T, h *testbed.Host, mac string) []netip.Addr {
	t.Helper()
	list, err := h.NS.NL.NeighList(h.NS.Link(t, vxlan.VTEPName(testbed.VNI)).Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, n := range list {
		if n.HardwareAddr.String() == mac {
			a, _ := netip.AddrFromSlice(n.IP)
			out = append(out, a.Unmap())
		}
	}
	return out
}

// A host holding two leases of the pool (a restart that leased anew
// before its old lease expired, its public IP changed in between)
// publishes one VTEP MAC at two public IPs; the kernel keeps one FDB
// destination per MAC. After any sequence of syncs the MAC's one entry
// points at a remaining lease's public IP, that of the lease expiring
// last (the one its host renews) while it remains; the other lease going
// never takes the entry with it, and full Syncs do not move it back and
// forth.
func TestVXLANOneFDBEntryPerMAC(t *testing.T) {
	t.Parallel()
	tb := testbed.New(t, "192.168.77.1", "192.168.77.2")
	a, b := tb.Hosts[0], tb.Hosts[1]
	b.Apply(t, b.Network("vxlan", false), a)
	n := a.Network("vxlan", false)
	ctx := context.Background()
	be := a.B["vxlan"]
	ds := be.(overlay.DeltaSyncer)
	if err := be.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// cur is the lease b renews, at its address; old the one it left at
	// its previous address (not renewed, expiring first).
	cur := b.Lease()
	cur.Expiry = now.Add(2 * time.Hour)
	old := b.Lease()
	old.Subnet, old.PublicIP, old.Expiry = netip.MustParsePrefix("10.42.20.0/24"), netip.MustParseAddr("192.168.77.99"), now.Add(time.Hour)
	mac := b.MAC()
	expect := func(when string, want netip.Addr) {
		t.Helper()
		if got := fdbDsts(t, a, mac); len(got) != 1 || got[0] != want {
			t.Fatalf("%s: fdb %s dst %v, want %s only", when, mac, got, want)
		}
	}
	sync := func(peers ...lease.Lease) {
		t.Helper()
		if err := be.Sync(ctx, n, peers); err != nil {
			t.Fatal(err)
		}
	}
	delta := func(changed []lease.Lease, removed ...netip.Prefix) {
		t.Helper()
		if err := ds.SyncPeers(ctx, n, changed, removed); err != nil {
			t.Fatal(err)
		}
	}

	// Deltas: cur, then old (changed), then old expires.
	sync()
	delta([]lease.Lease{cur})
	expect("cur added", cur.PublicIP)
	delta([]lease.Lease{old})
	expect("old added beside cur", cur.PublicIP)
	delta(nil, old.Subnet)
	expect("old gone", cur.PublicIP)
	testbed.MustPing(t, a, b)

	// Deltas the other way: old first, cur's arrival takes the entry, and
	// old's expiry leaves it.
	sync()
	if got := fdbDsts(t, a, mac); len(got) != 0 {
		t.Fatalf("fdb %s dst %v with no peer", mac, got)
	}
	delta([]lease.Lease{old})
	expect("old alone", old.PublicIP)
	delta([]lease.Lease{cur})
	expect("cur added beside old", cur.PublicIP)
	delta(nil, old.Subnet)
	expect("old gone", cur.PublicIP)
	testbed.MustPing(t, a, b)

	// Full Syncs agree with each other, whatever the order of the peers.
	sync(old, cur)
	expect("full sync", cur.PublicIP)
	sync(old, cur)
	expect("second full sync", cur.PublicIP)
	sync(cur, old)
	expect("full sync, other order", cur.PublicIP)
	testbed.MustPing(t, a, b)

	// cur goes (released): the entry moves to old's address, the lease
	// that remains; then old goes too, and the entry with it.
	delta(nil, cur.Subnet)
	expect("cur gone", old.PublicIP)
	if _, ok := testbed.FeltRoutes(t, a)[old.Subnet]; !ok {
		t.Fatal("old's route is gone")
	}
	delta(nil, old.Subnet)
	if got := fdbDsts(t, a, mac); len(got) != 0 {
		t.Fatalf("fdb %s dst %v after both leases went", mac, got)
	}

	// A lease moving to the other's address: one destination, still.
	sync(cur, old)
	moved := old
	moved.PublicIP = cur.PublicIP
	delta([]lease.Lease{moved})
	expect("old moved to cur's address", cur.PublicIP)
	delta(nil, cur.Subnet)
	expect("cur gone after the move", cur.PublicIP)
}
