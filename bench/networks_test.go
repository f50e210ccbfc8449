package bench

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"time"

	ipamapi "github.com/docker/go-plugins-helpers/ipam"
	netapi "github.com/docker/go-plugins-helpers/network"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// The networks part's size: -networks N (go test ... -args -networks 200),
// and a time budget for the creates, after which the part stops creating
// and reports how many it made (the "did not fit" case).
var (
	networksN      = flag.Int("networks", 500, "networks part: felt networks created on one host")
	networksBudget = flag.Duration("networks-budget", 150*time.Second, "networks part: stop creating networks after this long")
)

// Networks is the networks part: many felt networks on one host, one
// endpoint each, as `docker network create` and `docker run` would make.
type Networks struct {
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	Wanted    int    `json:"wanted"`  // -networks
	Created   int    `json:"created"` // fewer when the budget ran out
	// CreateMS[i] is the (i+1)th CreateNetwork call alone (i networks
	// present); EndpointMS[i] CreateEndpoint+Join on it; DeleteMS[i] the
	// DeleteNetwork call with Created-i networks present (deleted in the
	// order they were made, after their endpoint).
	CreateMS   []float64 `json:"create_ms"`
	EndpointMS []float64 `json:"endpoint_ms"`
	DeleteMS   []float64 `json:"delete_ms"`
	// Kernel objects with every network present, and left after the
	// deletes, each counted above what the host had before the first.
	// FeltCPUMS is felt's CPU time (user+system, ms) per network over the
	// first and the last tenth of the creates (CreateNetwork, the endpoint
	// and what they start in the background: overlay reconciles).
	FeltCPUMS [2]float64    `json:"felt_cpu_ms_per_network"`
	Peak      KernelObjects `json:"peak"`
	Left      KernelObjects `json:"left"`
	// One TCP stream (iperf3, median of 3 runs) between two containers on
	// one felt network: Alone with no other network on the host, WithAll
	// on a network made after the Created ones, all present (its rules
	// come after theirs); ThroughputRatio is WithAll/Alone. Forward policy
	// DROP, as Docker sets it. BridgeNFCallIptables is the host's
	// net.bridge.bridge-nf-call-iptables: with 1, container-to-container
	// traffic on a bridge passes the iptables rules of every network.
	Alone                *Throughput `json:"tcp_1_stream_one_network,omitempty"`
	WithAll              *Throughput `json:"tcp_1_stream_all_networks_present,omitempty"`
	ThroughputRatio      float64     `json:"tcp_1_stream_ratio_all_to_one,omitempty"`
	ThroughputReason     string      `json:"throughput_reason,omitempty"`
	BridgeNFCallIptables string      `json:"bridge_nf_call_iptables,omitempty"`
}

// KernelObjects counts what felt makes in a host's namespace.
type KernelObjects struct {
	Links    int `json:"links"`    // bridges, VTEPs, veths, ...
	Routes   int `json:"routes"`   // every table
	Rules    int `json:"rules"`    // ip rule
	Iptables int `json:"iptables"` // felt's rules and chains in iptables-save
}

func (k KernelObjects) String() string {
	return fmt.Sprintf("%d links, %d routes, %d ip rules, %d iptables lines", k.Links, k.Routes, k.Rules, k.Iptables)
}

// headTail is the median of the first and of the last few of v (single
// calls are noisy on a shared machine), and their ratio.
func headTail(v []float64) (head, tail, ratio float64) {
	w := min(5, len(v))
	if w == 0 {
		return 0, 0, 0
	}
	head, tail = median(v[:w]), median(v[len(v)-w:])
	if head > 0 {
		ratio = tail / head
	}
	return head, tail, ratio
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := range s { // tiny slices: insertion sort
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}

// countKernel counts the kernel objects in ns.
func countKernel(s *scope, ns string) KernelObjects {
	lines := func(args ...string) []string {
		out, err := testkit.Run(args...)
		if err != nil {
			s.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		var ls []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l != "" {
				ls = append(ls, l)
			}
		}
		return ls
	}
	var k KernelObjects
	k.Links = len(lines("ip", "-n", ns, "-o", "link", "show"))
	k.Routes = len(lines("ip", "-4", "-n", ns, "route", "show", "table", "all")) // felt is IPv4 only; IPv6 link-local routes come and go with DAD
	k.Rules = len(lines("ip", "-n", ns, "rule", "show"))
	for _, l := range lines(testkit.NetNSExec(ns, "iptables-save")...) {
		if strings.Contains(l, "FELT") || strings.Contains(l, "felt:") {
			k.Iptables++
		}
	}
	return k
}

func minus(a, b KernelObjects) KernelObjects {
	return KernelObjects{a.Links - b.Links, a.Routes - b.Routes, a.Rules - b.Rules, a.Iptables - b.Iptables}
}

// manyNetworks creates r.Wanted felt networks (each its own pool, one
// endpoint each) on one felt host with the embedded store, one after
// another, then removes them in the same order; it times the driver calls
// alone (not RequestPool, RequestAddress or their releases) and counts the
// kernel objects at the peak and after.
func manyNetworks(s *scope, bin string, r *Networks) {
	r.Wanted = *networksN
	if r.Wanted < 1 || r.Wanted > 4096 {
		s.Fatalf("-networks %d: between 1 and 4096", r.Wanted)
	}
	h := hosts.NewHost(s, hosts.HostOptions{Binary: bin, Env: []string{"FELT_LOG_LEVEL=info", "FELT_RESYNC_INTERVAL=30s"}})
	// As Docker sets it (see dataPlane): felt's rules must accept the
	// pools' traffic, and their traversal is part of what throughput pays.
	testkit.MustRun(s, testkit.NetNSExec(h.NS, "iptables", "-P", "FORWARD", "DROP")...)
	if out, err := testkit.Run(testkit.NetNSExec(h.NS, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables")...); err == nil {
		r.BridgeNFCallIptables = strings.TrimSpace(out)
	}
	// Before the first network: its own network, gone before the counts.
	alone, err := networkThroughput(s, h)
	if err != nil {
		r.ThroughputReason = err.Error()
	} else {
		r.Alone = &alone
	}
	base := countKernel(s, h.NS)
	baseRoutes, _ := testkit.Run("ip", "-4", "-n", h.NS, "route", "show", "table", "all")
	type made struct {
		net          *hosts.Net
		ep, epAddr   string
		endpoint, up bool
	}
	var nets []*made
	s.Cleanup(func() { // after a failure: best effort
		for _, m := range nets {
			if m.endpoint {
				_ = h.Call("NetworkDriver.Leave", netapi.LeaveRequest{NetworkID: m.net.ID, EndpointID: m.ep}, nil)
				_ = h.Call("NetworkDriver.DeleteEndpoint", netapi.DeleteEndpointRequest{NetworkID: m.net.ID, EndpointID: m.ep}, nil)
			}
			if m.up {
				_ = m.net.Delete()
			}
		}
	})
	start := time.Now()
	cpu := func() float64 {
		c, err := procCPU(h.PID())
		if err != nil {
			s.Fatalf("%v", err)
		}
		return c * 1000
	}
	cpus := []float64{cpu()} // felt's CPU ms before each create, and after the last
	for i := range r.Wanted {
		if time.Since(start) > *networksBudget {
			logf("networks: budget %s used up after %d networks", *networksBudget, i)
			break
		}
		// Pool i: a /20 of 10.64.0.0/11, this host's subnet a /24 of it.
		pool := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + i/16), byte(i % 16 * 16), 0}), 20)
		var rp ipamapi.RequestPoolResponse
		if err := h.Call("IpamDriver.RequestPool", ipamapi.RequestPoolRequest{AddressSpace: "FeltLocal", Pool: pool.String(),
			Options: map[string]string{"subnet_len": "24"}}, &rp); err != nil {
			s.Fatalf("network %d: RequestPool %s: %v", i, pool, err)
		}
		m := &made{net: &hosts.Net{Host: h, ID: hosts.RandomID(), PoolID: rp.PoolID}}
		nets = append(nets, m)
		gw := rp.Data["com.docker.network.gateway"]
		t0 := time.Now()
		err := h.Call("NetworkDriver.CreateNetwork", netapi.CreateNetworkRequest{NetworkID: m.net.ID,
			Options:  map[string]any{"com.docker.network.generic": map[string]any{}, "com.docker.network.enable_ipv6": false},
			IPv4Data: []*netapi.IPAMData{{AddressSpace: "FeltLocal", Pool: rp.Pool, Gateway: gw}}}, nil)
		if err != nil {
			_ = h.Call("IpamDriver.ReleasePool", ipamapi.ReleasePoolRequest{PoolID: rp.PoolID}, nil)
			s.Fatalf("network %d: CreateNetwork: %v", i, err)
		}
		r.CreateMS = append(r.CreateMS, msSince(t0))
		m.up = true
		mac := fmt.Sprintf("02:fe:01:00:%02x:%02x", byte(i>>8), byte(i))
		var addr ipamapi.RequestAddressResponse
		if err := h.Call("IpamDriver.RequestAddress", ipamapi.RequestAddressRequest{PoolID: rp.PoolID,
			Options: map[string]string{"com.docker.network.endpoint.macaddress": mac}}, &addr); err != nil {
			s.Fatalf("network %d: RequestAddress: %v", i, err)
		}
		m.ep, m.epAddr = hosts.RandomID(), addr.Address
		t0 = time.Now()
		if err := h.Call("NetworkDriver.CreateEndpoint", netapi.CreateEndpointRequest{NetworkID: m.net.ID, EndpointID: m.ep,
			Interface: &netapi.EndpointInterface{Address: addr.Address, MacAddress: mac}}, &netapi.CreateEndpointResponse{}); err != nil {
			s.Fatalf("network %d: CreateEndpoint: %v", i, err)
		}
		m.endpoint = true
		if err := h.Call("NetworkDriver.Join", netapi.JoinRequest{NetworkID: m.net.ID, EndpointID: m.ep,
			SandboxKey: "/var/run/docker/netns/bench"}, &netapi.JoinResponse{}); err != nil {
			s.Fatalf("network %d: Join: %v", i, err)
		}
		r.EndpointMS = append(r.EndpointMS, msSince(t0))
		cpus = append(cpus, cpu())
		if (i+1)%50 == 0 {
			logf("networks: %d created, the last in %.0f ms, %.0f s so far", i+1, r.CreateMS[i], time.Since(start).Seconds())
		}
	}
	r.Created = len(r.CreateMS)
	if w := max(1, r.Created/10); r.Created > 0 {
		r.FeltCPUMS = [2]float64{(cpus[w] - cpus[0]) / float64(w), (cpus[r.Created] - cpus[r.Created-w]) / float64(w)}
	}
	r.Peak = minus(countKernel(s, h.NS), base)
	if r.Alone != nil {
		all, err := networkThroughput(s, h)
		if err != nil {
			r.ThroughputReason = err.Error()
		} else {
			r.WithAll = &all
			r.ThroughputRatio = ratio(all.Gbps, r.Alone.Gbps)
			logf("networks: one TCP stream with %d networks present: %.2f× the same with none", r.Created, r.ThroughputRatio)
		}
	}
	for i, m := range nets {
		if err := h.Call("NetworkDriver.Leave", netapi.LeaveRequest{NetworkID: m.net.ID, EndpointID: m.ep}, nil); err != nil {
			s.Fatalf("network %d: Leave: %v", i, err)
		}
		if err := h.Call("NetworkDriver.DeleteEndpoint", netapi.DeleteEndpointRequest{NetworkID: m.net.ID, EndpointID: m.ep}, nil); err != nil {
			s.Fatalf("network %d: DeleteEndpoint: %v", i, err)
		}
		m.endpoint = false
		a, _, _ := strings.Cut(m.epAddr, "/")
		if err := h.Call("IpamDriver.ReleaseAddress", ipamapi.ReleaseAddressRequest{PoolID: m.net.PoolID, Address: a}, nil); err != nil {
			s.Fatalf("network %d: ReleaseAddress: %v", i, err)
		}
		t0 := time.Now()
		if err := h.Call("NetworkDriver.DeleteNetwork", netapi.DeleteNetworkRequest{NetworkID: m.net.ID}, nil); err != nil {
			s.Fatalf("network %d: DeleteNetwork: %v", i, err)
		}
		r.DeleteMS = append(r.DeleteMS, msSince(t0))
		m.up = false
		if err := h.Call("IpamDriver.ReleasePool", ipamapi.ReleasePoolRequest{PoolID: m.net.PoolID}, nil); err != nil {
			s.Fatalf("network %d: ReleasePool: %v", i, err)
		}
	}
	// What the overlay removes in the background (a reconcile under way)
	// gets a moment to go.
	time.Sleep(2 * time.Second)
	r.Left = minus(countKernel(s, h.NS), base)
	if r.Left.Routes > 0 {
		routes, _ := testkit.Run("ip", "-4", "-n", h.NS, "route", "show", "table", "all")
		for _, l := range strings.Split(routes, "\n") {
			if !strings.Contains(baseRoutes, l) {
				logf("networks: route left: %s", l)
			}
		}
	}
	r.Available = true
	ch, ct, cr := headTail(r.CreateMS)
	dh, dt, dr := headTail(r.DeleteMS)
	logf("networks: %d of %d created; CreateNetwork first %.1f ms, last %.1f ms (%.2f×); DeleteNetwork with all present %.1f ms, with one %.1f ms (%.2f×)",
		r.Created, r.Wanted, ch, ct, cr, dh, dt, 1/max(dr, 1e-9))
	logf("networks: felt CPU per network created: %.1f ms over the first tenth, %.1f ms over the last", r.FeltCPUMS[0], r.FeltCPUMS[1])
	logf("networks: at the peak %s; left after the deletes %s", r.Peak, r.Left)
}

// networkThroughput makes a network on h with two containers, measures
// one TCP stream between them and removes it all again.
func networkThroughput(s *scope, h *hosts.Host) (Throughput, error) {
	var t Throughput
	err := runScope(s.TB, "network throughput", func(ps *scope) {
		n := h.MustNetwork(ps, hosts.NetSpec{Subnet: "10.100.0.0/16"}) // apart from the parts' 10.64.0.0/11
		a, b := n.MustRun(ps, ""), n.MustRun(ps, "")
		testkit.WaitFor(ps, "containers on one network reach each other", func() bool { return a.Ping(b.Addr.Addr()) == nil })
		startIperfServer(ps, b.NS, b.Addr.Addr())
		var err error
		t, err = medianRun(iperfRuns, func() (Throughput, error) { return runIperf(a.NS, b.Addr.Addr(), 1, []int{h.PID()}) })
		if err != nil {
			ps.Fatalf("%v", err)
		}
		logf("networks: one TCP stream between two containers on one network: %.2f Gbit/s (median of %v)", t.Gbps, t.Runs)
	})
	return t, err
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
