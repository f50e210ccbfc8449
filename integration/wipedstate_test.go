package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/vxlan"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// A host whose state directory is wiped comes back with a new host ID and
// the same public IP (issue 15, defect 9). Its earlier incarnation's lease
// (24 h TTL) must not stay beside the new one: peers would keep the old
// subnet's route and, with vxlan, the old VTEP MAC in their FDB beside the
// new one. One public IP is one host in a pool, as in flannel: felt takes
// the old lease over.
//
// The sequence is what a user goes through: the host reboots (felt killed,
// felt's kernel state gone) with its state directory wiped, felt starts
// again. Docker still has the network and its containers but never replays
// CreateNetwork, and the new felt knows nothing of them, so the user
// removes the containers and the network (Docker's calls for them reach a
// felt that does not know them) and creates the network again: RequestPool
// and CreateNetwork for a new NetworkID.
//
// The kernel-kept variant wipes the state directory without a reboot: the
// first incarnation's bridge, veths, VTEP and rules stay, marked with its
// instance, which felt otherwise leaves alone as another felt's. The lease
// is taken over with its subnet, so the new bridge gets the old bridge's
// address and subnet: the old bridge, holding the connected route, cut the
// new container off. The takeover proves the old instance was this host's,
// and felt removes everything marked with it before the new bridge exists.
func TestWipedState(t *testing.T) {
	for _, backend := range []string{"vxlan", "host-gw"} {
		t.Run(backend+"/reboot", func(t *testing.T) { testWipedState(t, backend, true) })
	}
	t.Run("vxlan/kernel-kept", func(t *testing.T) { testWipedState(t, "vxlan", false) })
}

func testWipedState(t *testing.T, backend string, reboot bool) {
	pool := netip.MustParsePrefix("10.42.0.0/16")
	spec := hosts.NetSpec{Subnet: pool.String(), Opts: map[string]string{"backend": backend}}
	c := hosts.NewCluster(t, feltBin, 3)
	var ctrs []*hosts.Ctr
	for _, h := range c.Hosts {
		ctrs = append(ctrs, h.MustNetwork(t, spec).MustRun(t, ""))
	}
	hosts.WaitAllPairs(t, ctrs)

	reg := registryOf(t, c)
	ctx := context.Background()
	rec, err := reg.GetNetwork(ctx, pool)
	testkit.Must(t, err)
	w := c.Hosts[1] // the host whose state is wiped
	peers := []*hosts.Host{c.Hosts[0], c.Hosts[2]}
	wIP := netip.MustParseAddr(w.IP)

	// The first incarnation, as its peers see it: the check below must
	// find it before it can tell it is gone.
	old := onlyLeaseOf(t, reg, pool, wIP)
	if old.Subnet != ctrs[1].Net.Subnet {
		t.Fatalf("lease of %s is %s, but its network has subnet %s", w.IP, old.Subnet, ctrs[1].Net.Subnet)
	}
	settle(t, "peers see the first incarnation", func() string {
		return peersProblem(peers, rec, wIP, old, "")
	})

	// What the check for leftovers below looks for must be seen here.
	if !reboot && leftoversOf(t, w, old.HostID[:8]) == "" {
		t.Fatalf("no link or rule of the first incarnation's instance %s found on %s before the wipe", old.HostID[:8], w.NS)
	}

	// Wipe: felt stopped (killed by a reboot, or SIGTERM as docker plugin
	// disable does), every file of its state directory removed, felt
	// started again.
	if reboot {
		w.Kill()
		forgetKernelState(t, w)
	} else {
		w.Stop()
	}
	entries, err := os.ReadDir(w.Dir)
	testkit.Must(t, err)
	for _, e := range entries {
		testkit.Must(t, os.RemoveAll(filepath.Join(w.Dir, e.Name())))
	}
	w.Start()

	// docker rm -f and docker network rm: the new felt does not know the
	// endpoint or the network; Docker goes on whatever it answers.
	if err := ctrs[1].Stop(); err != nil {
		t.Logf("stopping the old container after the wipe: %v", err)
	}
	if err := ctrs[1].Net.Delete(); err != nil {
		t.Logf("removing the old network after the wipe: %v", err)
	}
	// docker network create and docker run again.
	n := w.MustNetwork(t, spec)
	d := n.MustRun(t, "")

	var cur lease.Lease
	settle(t, "one lease of "+w.IP+", the new incarnation's, and peers following it", func() string {
		ls, err := reg.Leases(ctx, pool)
		if err != nil {
			return err.Error()
		}
		var of []lease.Lease
		for _, l := range ls {
			if l.PublicIP == wIP {
				of = append(of, l)
			}
		}
		if len(of) != 1 {
			msg := fmt.Sprintf("%d leases of %s in Consul, want 1: %s", len(of), w.IP, describeLeases(of))
			// What the peers make of it, against the new network's lease.
			if i := slices.IndexFunc(of, func(l lease.Lease) bool { return l.Subnet == n.Subnet }); i >= 0 {
				if p := peersProblem(peers, rec, wIP, of[i], vxlan.LeaseVtepMAC(old)); p != "" {
					msg += "; and on the peers: " + p
				}
			}
			return msg
		}
		if cur = of[0]; cur.HostID == old.HostID {
			return fmt.Sprintf("the lease of %s still names the first incarnation %s", w.IP, old.HostID)
		}
		if cur.Subnet != n.Subnet {
			return fmt.Sprintf("the lease of %s has subnet %s, the new network %s", w.IP, cur.Subnet, n.Subnet)
		}
		if len(ls) != 3 {
			return fmt.Sprintf("%d leases in the pool, want 3 (one a host): %s", len(ls), describeLeases(ls))
		}
		if backend == "vxlan" {
			if want := vxlan.VtepMAC(cur.HostID, pool).String(); vxlan.LeaseVtepMAC(cur) != want {
				return fmt.Sprintf("lease VTEP MAC %s, want %s (from the new host ID)", vxlan.LeaseVtepMAC(cur), want)
			}
			if vxlan.LeaseVtepMAC(cur) == vxlan.LeaseVtepMAC(old) {
				return "the new incarnation's VTEP MAC is the old one's: the host ID did not change"
			}
			if got := linkMAC(w, vxlan.VTEPName(rec.VNI)); got != vxlan.LeaseVtepMAC(cur) {
				return fmt.Sprintf("VTEP on the wiped host has MAC %q, its lease %s", got, vxlan.LeaseVtepMAC(cur))
			}
		}
		return peersProblem(peers, rec, wIP, cur, vxlan.LeaseVtepMAC(old))
	})
	t.Logf("lease of %s: %s, host %s -> %s, VTEP MAC %q -> %q",
		w.IP, cur.Subnet, old.HostID, cur.HostID, vxlan.LeaseVtepMAC(old), vxlan.LeaseVtepMAC(cur))

	// Not a passing state: a few resyncs later (1 s here) it still holds.
	time.Sleep(3 * time.Second)
	if p := peersProblem(peers, rec, wIP, cur, vxlan.LeaseVtepMAC(old)); p != "" {
		t.Fatalf("after a few resyncs: %s", p)
	}
	if l := onlyLeaseOf(t, reg, pool, wIP); l.HostID != cur.HostID {
		t.Fatalf("after a few resyncs the lease of %s is %s's, not %s's", w.IP, l.HostID, cur.HostID)
	}

	if p := leftoversOf(t, w, old.HostID[:8]); p != "" {
		t.Fatalf("the first incarnation's objects stay on %s: %s", w.NS, p)
	}

	live := []*hosts.Ctr{ctrs[0], d, ctrs[2]}
	testkit.WaitFor(t, "the new container reaching its peers", func() bool {
		return d.Ping(ctrs[0].Addr.Addr()) == nil && d.Ping(ctrs[2].Addr.Addr()) == nil
	})
	hosts.AllPairsPing(t, live)
	hosts.Transfer(t, ctrs[0], d, 1<<20)
}

// forgetKernelState removes what a reboot takes along from felt's host h:
// its links (bridges, veths, VTEPs: the containers' ends go with the
// veths), its routes and its iptables rules.
func forgetKernelState(t *testing.T, h *hosts.Host) {
	t.Helper()
	for _, l := range hosts.FeltLinks(t, h.NS) {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		testkit.MustRun(t, "ip", "-n", h.NS, "link", "del", name)
	}
	testkit.MustRun(t, "ip", "-n", h.NS, "route", "flush", "proto", fmt.Sprint(int(overlay.RouteProtocol)))
	for _, table := range []string{"filter", "nat", "mangle"} {
		testkit.MustRun(t, testkit.NetNSExec(h.NS, "iptables", "-t", table, "-F")...)
		testkit.MustRun(t, testkit.NetNSExec(h.NS, "iptables", "-t", table, "-X")...)
	}
	if left := hosts.FeltLinks(t, h.NS); len(left) > 0 {
		t.Fatalf("links left after the reboot: %v", left)
	}
}

// leftoversOf describes the links and iptables rules on h marked with felt
// instance inst, or is "" when there are none.
func leftoversOf(t *testing.T, h *hosts.Host, inst string) string {
	t.Helper()
	mark := "felt:" + inst + ":"
	var left []string
	for _, l := range hosts.FeltLinks(t, h.NS) {
		if strings.Contains(l, "alias "+mark) {
			left = append(left, l)
		}
	}
	for _, table := range []string{"filter", "mangle"} {
		for _, r := range lines(testkit.MustRun(t, testkit.NetNSExec(h.NS, "iptables", "-t", table, "-S")...)) {
			if strings.Contains(r, mark) {
				left = append(left, "-t "+table+" "+r)
			}
		}
	}
	if len(left) == 0 {
		return ""
	}
	return strings.Join(left, "\n")
}

// onlyLeaseOf is the one lease in pool with public IP ip, or fails.
func onlyLeaseOf(t *testing.T, reg *lease.Registry, pool netip.Prefix, ip netip.Addr) lease.Lease {
	t.Helper()
	ls, err := reg.Leases(context.Background(), pool)
	testkit.Must(t, err)
	var of []lease.Lease
	for _, l := range ls {
		if l.PublicIP == ip {
			of = append(of, l)
		}
	}
	if len(of) != 1 {
		t.Fatalf("%d leases of %s, want 1: %s", len(of), ip, describeLeases(of))
	}
	return of[0]
}

func describeLeases(ls []lease.Lease) string {
	var s []string
	for _, l := range ls {
		s = append(s, fmt.Sprintf("%s (host %s, IP %s, MAC %q)", l.Subnet, l.HostID, l.PublicIP, vxlan.LeaseVtepMAC(l)))
	}
	return "[" + strings.Join(s, "; ") + "]"
}

// peersProblem says how a peer's kernel state for the host at ip differs
// from its lease l, or "" when it matches on every peer.
//
// vxlan: on the pool's VTEP, exactly one FDB entry with dst ip, holding l's
// MAC, and the neighbour entry of l's subnet with that MAC; no entry
// on the VTEP with the MAC gone (an earlier incarnation's). host-gw: exactly one route
// of the pool via ip, to l's subnet.
func peersProblem(peers []*hosts.Host, rec lease.Network, ip netip.Addr, l lease.Lease, gone string) string {
	for _, p := range peers {
		var prob string
		if rec.Backend == "host-gw" {
			prob = hostGWProblem(p, rec, ip, l)
		} else {
			prob = vxlanProblem(p, rec, ip, l, gone)
		}
		if prob != "" {
			return p.NS + ": " + prob
		}
	}
	return ""
}

func vxlanProblem(p *hosts.Host, rec lease.Network, ip netip.Addr, l lease.Lease, gone string) string {
	vtep := vxlan.VTEPName(rec.VNI)
	out, err := testkit.Run("bridge", "-n", p.NS, "fdb", "show", "dev", vtep)
	if err != nil {
		return fmt.Sprintf("fdb of %s: %v: %s", vtep, err, out)
	}
	var macs []string
	for _, line := range lines(out) {
		f := strings.Fields(line)
		if i := slices.Index(f, "dst"); i >= 0 && i+1 < len(f) && f[i+1] == ip.String() {
			macs = append(macs, f[0])
		}
	}
	if len(macs) != 1 || macs[0] != vxlan.LeaseVtepMAC(l) {
		return fmt.Sprintf("FDB entries on %s for %s: %v, want exactly [%s]\n%s", vtep, ip, macs, vxlan.LeaseVtepMAC(l), out)
	}
	out, err = testkit.Run("ip", "-n", p.NS, "neigh", "show", "dev", vtep)
	if err != nil {
		return fmt.Sprintf("neighbours of %s: %v: %s", vtep, err, out)
	}
	gw := l.Subnet.Masked().Addr().String() // the peer's VTEP address
	found := false
	for _, line := range lines(out) {
		f := strings.Fields(line)
		i := slices.Index(f, "lladdr")
		if i < 0 || i+1 >= len(f) {
			continue
		}
		switch {
		case f[0] == gw && f[i+1] == vxlan.LeaseVtepMAC(l):
			found = true
		case f[0] == gw || f[i+1] == vxlan.LeaseVtepMAC(l):
			return fmt.Sprintf("neighbour entry %q on %s contradicts the lease (%s at %s)\n%s", line, vtep, gw, vxlan.LeaseVtepMAC(l), out)
		}
	}
	for _, m := range macsOf(out) {
		if m == gone {
			return fmt.Sprintf("neighbour entry with the earlier incarnation's MAC %s on %s\n%s", gone, vtep, out)
		}
	}
	if !found {
		return fmt.Sprintf("no neighbour entry %s lladdr %s on %s\n%s", gw, vxlan.LeaseVtepMAC(l), vtep, out)
	}
	return ""
}

func hostGWProblem(p *hosts.Host, rec lease.Network, ip netip.Addr, l lease.Lease) string {
	out, err := testkit.Run("ip", "-n", p.NS, "route", "show", "root", rec.Pool.String(), "via", ip.String())
	if err != nil {
		return fmt.Sprintf("routes: %v: %s", err, out)
	}
	var dsts []string
	for _, line := range lines(out) {
		dsts = append(dsts, strings.Fields(line)[0])
	}
	if len(dsts) != 1 || dsts[0] != l.Subnet.String() {
		return fmt.Sprintf("routes of %s via %s: %v, want exactly [%s]", rec.Pool, ip, dsts, l.Subnet)
	}
	return ""
}

// macsOf lists the lladdr MACs of ip neigh output.
func macsOf(out string) []string {
	var macs []string
	for _, line := range lines(out) {
		f := strings.Fields(line)
		if i := slices.Index(f, "lladdr"); i >= 0 && i+1 < len(f) {
			macs = append(macs, f[i+1])
		}
	}
	return macs
}

// linkMAC is the MAC of link dev on host h, or "" when it is missing.
func linkMAC(h *hosts.Host, dev string) string {
	out, err := testkit.Run("ip", "-n", h.NS, "-o", "link", "show", dev)
	if err != nil {
		return ""
	}
	f := strings.Fields(out)
	if i := slices.Index(f, "link/ether"); i >= 0 && i+1 < len(f) {
		return f[i+1]
	}
	return ""
}

func lines(out string) []string {
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

// settle polls problem, which describes what is still wrong ("" when
// nothing is), for up to 30 s (a bound against hanging, not a timing
// assertion), and fails with its last description.
func settle(t *testing.T, what string, problem func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if last = problem(); last == "" {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: still, after 30 s: %s", what, last)
}
