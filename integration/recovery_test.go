package integration

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// routeTo is felt's route to subnet on h, or "".
func routeTo(h *hosts.Host, subnet netip.Prefix) string {
	out, _ := testkit.Run("ip", "-n", h.NS, "route", "show", subnet.String(), "proto", "76")
	return strings.TrimSpace(out)
}

// After a long Consul outage, a host that creates the network once Consul
// is back is routed by the others within seconds (issue 15, defect 7). The
// lease watch used to back off to 30 s, so after an outage of more than
// 31 s its next try could be 30 s away; the resync, an hour here, did not
// help either.
func TestLeaseWatchRecoversAfterOutage(t *testing.T) {
	c := hosts.NewCluster(t, feltBin, 2, longResync)
	var ctrs []*hosts.Ctr
	for _, h := range c.Hosts {
		ctrs = append(ctrs, h.MustNetwork(t, hosts.NetSpec{Subnet: "10.42.0.0/16"}).MustRun(t, ""))
	}
	testkit.WaitFor(t, "cross-host ping", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })

	c.Consul.Stop()
	late := c.AddHost() // joins during the outage
	// Past the old backoff's first five steps (1+2+4+8+16 s): its sixth
	// wait, 30 s, has begun.
	time.Sleep(35 * time.Second)
	ctrs[0].MustPing(t, ctrs[1].Addr.Addr())
	c.Consul.Restart()

	var n *hosts.Net
	testkit.WaitFor(t, "network creation on the late host once Consul is back", func() bool {
		var err error
		n, err = late.CreateNetwork(hosts.NetSpec{Subnet: "10.42.0.0/16"})
		return err == nil
	})
	t.Cleanup(func() { _ = n.Delete() })
	lc := n.MustRun(t, "")
	for _, h := range c.Hosts[:2] {
		within(t, 10*time.Second, "route to the late host's subnet on "+h.NS, func() bool { return routeTo(h, n.Subnet) != "" })
	}
	within(t, 10*time.Second, "traffic to the late host", func() bool { return ctrs[0].Ping(lc.Addr.Addr()) == nil })
	hosts.AllPairsPing(t, append(ctrs, lc))
}

// A host that dies leaves its lease until it expires; then its entries go
// from every peer at once, on a timer, not at the next event or resync
// (issue 15, defect 7). The live hosts renew hourly here and the resync is
// an hour away, so nothing else happens when the lease expires.
func TestExpiredLeaseRemovedOnTime(t *testing.T) {
	c := hosts.NewCluster(t, feltBin, 2, longResync)
	pool := netip.MustParsePrefix("10.42.0.0/16")
	var ctrs []*hosts.Ctr
	for _, h := range c.Hosts {
		ctrs = append(ctrs, h.MustNetwork(t, hosts.NetSpec{Subnet: pool.String()}).MustRun(t, ""))
	}
	testkit.WaitFor(t, "cross-host ping", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })

	// A host that took a lease and died: written straight into Consul.
	reg := registryOf(t, c)
	ctx := context.Background()
	rec, err := reg.GetNetwork(ctx, pool)
	testkit.Must(t, err)
	const ttl = 8 * time.Second
	dead, err := reg.Acquire(ctx, lease.AcquireRequest{Network: rec, TTL: ttl,
		Owner: lease.Owner{HostID: "dead-host", PublicIP: netip.MustParseAddr("192.168.77.99"), BackendData: json.RawMessage(`{"vtepMAC":"02:de:ad:00:00:01"}`)}})
	testkit.Must(t, err)
	for _, h := range c.Hosts {
		testkit.WaitFor(t, "route to the dead host's subnet on "+h.NS, func() bool { return routeTo(h, dead.Subnet) != "" })
	}
	for _, h := range c.Hosts {
		within(t, time.Until(dead.Expiry)+10*time.Second, "dead host's route removed from "+h.NS,
			func() bool { return routeTo(h, dead.Subnet) == "" })
	}
	testkit.WaitFor(t, "expired lease removed from Consul", func() bool {
		ls, err := reg.Leases(ctx, pool)
		if err != nil {
			return false
		}
		for _, l := range ls {
			if l.Subnet == dead.Subnet {
				return false
			}
		}
		return len(ls) == 2
	})
	hosts.AllPairsPing(t, ctrs)
}
