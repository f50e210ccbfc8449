package integration

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// The wireguard backend (issue #13) across namespace hosts: what crosses
// the underlay, what an attacker on it can inject, a host's key changing,
// and two wireguard networks on one host. (The suites every backend runs,
// multi-host traffic, restart, dead host, isolation, are in
// multihost_test.go.)

var wgOpts = map[string]string{"backend": "wireguard"}

// wgDefaultPort is the port of a wireguard network without -o port.
const wgDefaultPort = 51820

// wgPair is two hosts, FORWARD policy DROP as Docker sets it, with a
// wireguard network on pool and a container on each.
func wgPair(t *testing.T, c *hosts.Cluster, pool string, opts map[string]string) []*hosts.Ctr {
	t.Helper()
	var ctrs []*hosts.Ctr
	for _, h := range c.Hosts {
		ctrs = append(ctrs, h.MustNetwork(t, hosts.NetSpec{Subnet: pool, Opts: opts}).MustRun(t, ""))
	}
	hosts.WaitAllPairs(t, ctrs)
	return ctrs
}

// netMTU is n's MTU on h, from felt status; a wireguard network's must
// be the underlay's (1500) less WireGuard's 80 bytes of overhead.
func netMTU(t *testing.T, h *hosts.Host, n *hosts.Net) int {
	t.Helper()
	_, st := statusJSON(t, h)
	for _, ns := range st.Networks {
		if ns.Subnet == n.Subnet {
			if ns.Backend == "wireguard" && ns.MTU != 1500-80 {
				t.Errorf("%s: wireguard network %s: MTU %d, want %d", h.NS, ns.Pool, ns.MTU, 1500-80)
			}
			return ns.MTU
		}
	}
	t.Fatalf("%s: felt status has no network with subnet %s", h.NS, n.Subnet)
	return 0
}

func newWGCluster(t *testing.T, n int, env ...string) *hosts.Cluster {
	t.Helper()
	c := hosts.NewCluster(t, feltBin, n, env...)
	for _, h := range c.Hosts {
		testkit.MustRun(t, testkit.NetNSExec(h.NS, "iptables", "-P", "FORWARD", "DROP")...)
	}
	return c
}

// A capture on host 1's underlay interface while containers on both hosts
// start, ping each other and send 2 MiB over TCP: every packet between the
// hosts is UDP from the network's port to it, carrying well-formed
// WireGuard messages; nothing holds the transfer's bytes, the ping's
// payload or an inner IPv4 header with the containers' addresses; the
// handshake and data messages carrying the transfer were seen. The same check on a udp network flags its clear packets, so
// the check itself can fail.
func TestWireGuardUnderlayCapture(t *testing.T) {
	// Probes off: the first handshake is the containers' (below), and no
	// probe crosses the udp control network in clear during the
	// wireguard capture.
	c := newWGCluster(t, 2, "FELT_PROBE_INTERVAL=0")
	h1, h2 := c.Hosts[0], c.Hosts[1]
	pool := netip.MustParsePrefix("10.46.0.0/16")
	var nets []*hosts.Net
	for _, h := range c.Hosts {
		nets = append(nets, h.MustNetwork(t, hosts.NetSpec{Subnet: pool.String(), Opts: wgOpts}))
	}
	for _, h := range c.Hosts {
		testkit.WaitFor(t, h.NS+"'s wireguard peer", func() bool { return len(peerKeys(t, h, pool)) == 1 })
	}

	const size = 2 << 20
	pingPayload := []byte("felt testkit ping payload") // testkit.Ping's
	run := func(nets []*hosts.Net, marker string, port uint16) underlayReport {
		t.Helper()
		mtu := netMTU(t, h1, nets[0])
		capt := startCapture(t, h1.NS, "ul0")
		ctrs := []*hosts.Ctr{nets[0].MustRun(t, ""), nets[1].MustRun(t, "")}
		hosts.WaitAllPairs(t, ctrs)
		for range 3 {
			ctrs[0].MustPing(t, ctrs[1].Addr.Addr())
			ctrs[1].MustPing(t, ctrs[0].Addr.Addr())
		}
		hosts.TransferData(t, ctrs[0], ctrs[1], markerData(marker, size))
		hosts.TransferData(t, ctrs[1], ctrs[0], markerData(marker, 64<<10))
		frames, err := capt.stop()
		testkit.Must(t, err)
		r := checkUnderlay(frames, netip.MustParseAddr(h1.IP), netip.MustParseAddr(h2.IP), port, mtu,
			[][]byte{[]byte(marker), pingPayload}, [][2]netip.Addr{{ctrs[0].Addr.Addr(), ctrs[1].Addr.Addr()}})
		t.Logf("%d frames, %d IPv4 packets between the hosts, messages by type %v, %d bytes of data messages, %d problems",
			len(frames), r.packets, r.msgs[1:], r.dataBytes, r.nProblems)
		return r
	}

	r := run(nets, "FELT-WG-CAPTURE-MARKER/", wgDefaultPort)
	if r.nProblems > 0 {
		t.Errorf("wireguard: %d packets on the underlay are not (only) WireGuard:\n%s", r.nProblems, strings.Join(r.problems, "\n"))
	}
	if r.msgs[1] == 0 || r.msgs[2] == 0 {
		t.Errorf("wireguard: messages by type %v: the handshake (initiation, response) was not captured", r.msgs[1:])
	}
	if r.msgs[4] == 0 || r.dataBytes < size {
		t.Errorf("wireguard: %d data messages, %d bytes, for a %d-byte transfer: the traffic did not cross the captured underlay as WireGuard",
			r.msgs[4], r.dataBytes, size)
	}

	// Control: udp carries the same traffic in clear.
	var plain []*hosts.Net
	for _, h := range c.Hosts {
		plain = append(plain, h.MustNetwork(t, hosts.NetSpec{Subnet: "10.47.0.0/16", Opts: map[string]string{"backend": "udp"}}))
	}
	ctl := run(plain, "FELT-UDP-CAPTURE-MARKER/", 8285)
	if ctl.kinds["inner header"] == 0 || ctl.kinds["clear"] == 0 || ctl.kinds["port"]+ctl.kinds["message"] == 0 {
		t.Errorf("control: the check did not flag the udp backend's clear packets (problems by kind %v): it cannot tell", ctl.kinds)
	}
}

// Datagrams forged on the underlay to a host's wireguard port, from a
// namespace that is not a felt host and with the other host's address
// spoofed: a plain IPv4/UDP and an IPv4/ICMP packet to the container, data
// messages (type 4) with the receiver index seen on the wire and made-up
// contents, and real data messages replayed. None reaches the container;
// the real datagram sent before arrives once; traffic still flows. The same
// plain packet forged to a udp network's port does reach its container (a
// control: the forging works, so the wireguard checks can fail).
func TestWireGuardForgedDatagrams(t *testing.T) {
	c := newWGCluster(t, 2)
	h1, h2 := c.Hosts[0], c.Hosts[1]
	wg := wgPair(t, c, "10.46.0.0/16", wgOpts)
	plain := wgPair(t, c, "10.47.0.0/16", map[string]string{"backend": "udp"})
	x := attacker(t, c, "192.168.77.99/24")
	xIP, h1IP, h2IP := netip.MustParseAddr("192.168.77.99"), netip.MustParseAddr(h1.IP), netip.MustParseAddr(h2.IP)
	src, dst := wg[0].Addr.Addr(), wg[1].Addr.Addr()

	inCtr := startCapture(t, wg[1].NS, "eth0")
	inPlain := startCapture(t, plain[1].NS, "eth0")

	// A real datagram, and the data messages that carried it to host 2.
	ul := startCapture(t, h2.NS, "ul0")
	realMsg := []byte("FELT-WG-REAL-ONCE")
	sendUDP(t, wg[0].NS, dst, 7777, realMsg)
	testkit.WaitFor(t, "the real datagram in the container", func() bool { return count(inCtr.snapshot(), realMsg) > 0 })
	frames, err := ul.stop()
	testkit.Must(t, err)
	seen := checkUnderlay(frames, h1IP, h2IP, wgDefaultPort, netMTU(t, h2, wg[1].Net), nil, nil)
	if len(seen.toB) == 0 {
		t.Fatalf("no data message to host 2 captured (%d frames, %d between the hosts, messages by type %v, problems %q)",
			len(frames), seen.packets, seen.msgs[1:], seen.problems)
	}
	last := seen.toB[len(seen.toB)-1]
	idx := uint32(last[4]) | uint32(last[5])<<8 | uint32(last[6])<<16 | uint32(last[7])<<24

	forgedUDP := []byte("FELT-WG-FORGED-UDP")
	forgedICMP := []byte("FELT-WG-FORGED-ICMP")
	forgedData := []byte("FELT-WG-FORGED-DATA")
	raw := newRawSender(t, x)
	for _, from := range []netip.Addr{xIP, h1IP} {
		out := func(payload []byte) []byte {
			return udpPacket(from, h2IP, wgDefaultPort, wgDefaultPort, payload)
		}
		for range 3 {
			raw.send(t, out(udpPacket(src, dst, 40000, 7777, forgedUDP)))
			raw.send(t, out(icmpEcho(src, dst, forgedICMP)))
			for _, i := range []uint32{idx, idx + 1, 1} {
				raw.send(t, out(fakeData(i, uint64(time.Now().UnixNano()), udpPacket(src, dst, 40000, 7777, forgedData))))
			}
		}
		if from == h1IP { // a replay from the address the messages came from
			for _, m := range seen.toB {
				raw.send(t, out(m))
			}
		}
	}
	// Control: the plain packet to the udp network's port.
	forgedCtl := []byte("FELT-UDP-FORGED-CONTROL")
	for range 3 {
		raw.send(t, udpPacket(h1IP, h2IP, 8285, 8285, udpPacket(plain[0].Addr.Addr(), plain[1].Addr.Addr(), 40000, 7777, forgedCtl)))
	}

	// Real traffic still flows, after the forgeries.
	after := []byte("FELT-WG-REAL-AFTER")
	wg[0].MustPing(t, dst)
	wg[1].MustPing(t, src)
	hosts.Transfer(t, wg[0], wg[1], 256<<10)
	sendUDP(t, wg[0].NS, dst, 7777, after)
	testkit.WaitFor(t, "the datagram sent after the forgeries", func() bool { return count(inCtr.snapshot(), after) > 0 })
	testkit.WaitFor(t, "control: the forged datagram in the udp network's container", func() bool {
		return count(inPlain.snapshot(), forgedCtl) > 0
	})
	time.Sleep(time.Second) // anything forged still in flight
	// Nothing forged moved host 2's peer (WireGuard roams to the source of
	// an authenticated message only).
	if st := wgStatusOf(t, h2, netip.MustParsePrefix("10.46.0.0/16")); st.WireGuardStatus == nil || len(st.Peers) != 1 ||
		st.Peers[0].Endpoint != netip.AddrPortFrom(h1IP, wgDefaultPort).String() {
		t.Errorf("host 2's wireguard status after the forgeries: %+v, want one peer at %s:%d", st.WireGuardStatus, h1IP, wgDefaultPort)
	}

	got, err := inCtr.stop()
	testkit.Must(t, err)
	for _, m := range [][]byte{forgedUDP, forgedICMP, forgedData} {
		if n := count(got, m); n > 0 {
			t.Errorf("%q forged on the underlay reached the container %d times", m, n)
		}
	}
	if n := count(got, realMsg); n != 1 {
		t.Errorf("the real datagram reached the container %d times, want once (%d data messages replayed)", n, len(seen.toB))
	}
}

// Host 2 loses its key (its state's wireguard.key deleted while felt is
// stopped): it starts with a new one, publishes it in its lease (same
// subnet), the other hosts replace its old key by the new one, and traffic
// resumes. The private key was never logged nor stored in Consul.
func TestWireGuardKeyChange(t *testing.T) {
	c := newWGCluster(t, 3)
	pool := netip.MustParsePrefix("10.46.0.0/16")
	ctrs := wgPair(t, c, pool.String(), wgOpts)
	h2 := c.Hosts[1]
	subnet := ctrs[1].Net.Subnet
	keys := leaseKeys(t, c, pool)
	old := keys[subnet]
	if len(keys) != 3 || !validKey(old) {
		t.Fatalf("lease keys %v: want three, host 2's (%s) a valid key", keys, subnet)
	}
	for _, h := range []*hosts.Host{c.Hosts[0], c.Hosts[2]} {
		testkit.WaitFor(t, h.NS+" has host 2's key as a peer", func() bool {
			return slices.Contains(peerKeys(t, h, pool), old)
		})
	}

	keyFile := filepath.Join(h2.Dir, "wireguard.key")
	st, err := os.Stat(keyFile)
	testkit.Must(t, err)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", keyFile, st.Mode().Perm())
	}
	priv, err := os.ReadFile(keyFile)
	testkit.Must(t, err)
	secret := strings.TrimSpace(string(priv))
	impl := wgStatusOf(t, h2, pool).Implementation
	h2.Stop()
	log := h2.Log()
	if strings.Contains(log, secret) {
		t.Errorf("host 2's log holds its private key")
	}
	// The log says which WireGuard runs, as felt status does.
	if want := map[string]string{"kernel": "wireguard: using kernel WireGuard", "userspace": "using wireguard-go in user space"}[impl]; want == "" || strings.Count(log, want) != 1 {
		t.Errorf("host 2: felt status says implementation %q; its log says %q %d times, want once", impl, want, strings.Count(log, want))
	}
	testkit.Must(t, os.Remove(keyFile))
	h2.Start()

	var now string
	testkit.WaitFor(t, "host 2's lease with a new key", func() bool {
		now = leaseKeys(t, c, pool)[subnet]
		return validKey(now) && now != old
	})
	for _, h := range []*hosts.Host{c.Hosts[0], c.Hosts[2]} {
		testkit.WaitFor(t, h.NS+" has host 2's new key, not the old one", func() bool {
			k := peerKeys(t, h, pool)
			return slices.Contains(k, now) && !slices.Contains(k, old)
		})
	}
	testkit.WaitFor(t, "traffic to host 2 with its new key", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	// felt status shows the same: host 2's own key, and its peers' view.
	if st := wgStatusOf(t, h2, pool); st.WireGuardStatus == nil || st.PublicKey != now {
		t.Errorf("host 2's felt status: wireguard %+v, want its public key %s", st.WireGuardStatus, now)
	}
	for _, h := range []*hosts.Host{c.Hosts[0], c.Hosts[2]} {
		if k := wgStatusOf(t, h, pool).keys(); !slices.Contains(k, now) || slices.Contains(k, old) || len(k) != 2 {
			t.Errorf("%s's felt status: wireguard peers %v, want host 2's new key %s and not its old %s", h.NS, k, now, old)
		}
	}
	hosts.AllPairsPing(t, ctrs)
	hosts.Transfer(t, ctrs[2], ctrs[1], 1<<20)
	if got := leaseKeys(t, c, pool)[subnet]; got != now {
		t.Errorf("host 2's lease key changed again: %s, then %s", now, got)
	}

	// The private key is in the state directory only.
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the new %s: %v, %v; want mode 0600", keyFile, st, err)
	}
	priv, err = os.ReadFile(keyFile)
	testkit.Must(t, err)
	secret2 := strings.TrimSpace(string(priv))
	kvs, _, err := consulKV(t, c)
	testkit.Must(t, err)
	for k, v := range kvs {
		for _, s := range []string{secret, secret2} {
			if strings.Contains(string(v), s) {
				t.Errorf("Consul key %s holds a host's private key", k)
			}
		}
	}
}

// Two wireguard networks on one host: with the default port the second is
// refused naming -o port, and leaves no device behind; with -o port=51821 it
// works, each device listens on its own port, and both carry traffic
// across hosts.
func TestWireGuardTwoNetworksOneHost(t *testing.T) {
	c := newWGCluster(t, 2)
	h1 := c.Hosts[0]
	a := wgPair(t, c, "10.48.0.0/16", wgOpts)

	poolB := netip.MustParsePrefix("10.49.0.0/16")
	n, err := h1.CreateNetwork(hosts.NetSpec{Subnet: poolB.String(), Opts: wgOpts})
	if err == nil {
		_ = n.Delete()
		t.Fatalf("a second wireguard network on port %d was created", wgDefaultPort)
	}
	testkit.WantErr(t, err, "-o port")
	t.Logf("refused: %v", err)
	for _, l := range hosts.FeltLinks(t, h1.NS) {
		if strings.Contains(l, wgDeviceName(poolB)) {
			t.Errorf("the refused network left %s", l)
		}
	}

	b := wgPair(t, c, poolB.String(), map[string]string{"backend": "wireguard", "port": "51821"})
	for _, h := range c.Hosts {
		for pool, port := range map[string]int{"10.48.0.0/16": wgDefaultPort, poolB.String(): 51821} {
			d, err := readWGDevice(h, netip.MustParsePrefix(pool))
			if errors.Is(err, errNoUAPI) {
				continue // kernel WireGuard: the traffic below tells
			}
			testkit.Must(t, err)
			if d.ListenPort != port || len(d.Peers) != 1 {
				t.Errorf("%s: %s's device: port %d, %d peers; want port %d, one peer", h.NS, pool, d.ListenPort, len(d.Peers), port)
			}
		}
	}
	for _, ctrs := range [][]*hosts.Ctr{a, b} {
		hosts.AllPairsPing(t, ctrs)
		hosts.Transfer(t, ctrs[0], ctrs[1], 1<<20)
	}
}
