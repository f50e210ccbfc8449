package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/internal/nsutil"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	feltplugin "github.com/felt-net/felt/plugin"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
)

// TestWireGuard's hosts, names and addresses: a harness of its own, apart
// from the other tests' (the cluster harness's types and helpers, with
// other namespaces, bridge and addresses).
const (
	wgUL      = "felt-wg-ul" // the underlay namespace (at most 14 characters: engine2.sh)
	wgBridge  = "fwg-br"
	wgULAddr  = "192.168.97.1"
	wgNSStart = "felt-wg-h"
	wgPool    = "10.74.0.0/16"
	wgNet     = "felt-wg"
	wgPort    = 51820 // the backend's default (-o port unset)
	// wgMarker is plaintext the containers send each other: a capture on
	// the underlay must never see it.
	wgMarker = "felt-wg-plaintext-marker"
)

// TestWireGuard: the wireguard backend (issue #13) between two real Docker
// engines, this machine's Docker (20.10) and Docker 29 (26 without it; this
// machine's again without the engines cache, except under CI), each in a
// network namespace on one underlay bridge with one Consul, felt installed
// in both as the managed plugin. A network created with -o
// backend=wireguard on h1 appears on h2 (cluster networks); containers on
// the two engines ping each other and carry TCP across (8 MB over HTTP,
// checked by md5, and nc both ways), while a packet capture on h1's link
// to the underlay, from before the network exists, sees only WireGuard
// messages between the hosts (their handshake, then data): UDP 51820 to
// 51820, a WireGuard message type, no inner IP header (the containers'
// address pair) and no payload marker anywhere. Without the
// kernel module (as on this machine) felt runs wireguard-go inside the
// plugin: its UAPI socket is in /var/run/wireguard of the plugin's own
// rootfs (not the host's, not the other engine's plugin's), and answers
// with the peer the other host published in its lease. After a kill -9
// of one plugin, Docker's restart of it carries traffic again with the
// same key. Removing the network removes device, socket and routes on
// both hosts.
func TestWireGuard(t *testing.T) {
	testkit.NeedCommands(t, "dockerd", "containerd", "runc", "nsenter", "unshare", "ip", "bash")
	consul.Binary(t) // skips (fails with CI=true) without bin/consul
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	c := &clCluster{engine2: engine2Script(t), top: top}
	h1 := &clHost{name: "h1", ns: wgNSStart + "1", addr: "192.168.97.11", version: "20.10"}
	h2 := &clHost{name: "h2", ns: wgNSStart + "2", addr: "192.168.97.12", version: "20.10"}
	c.hosts = []*clHost{h1, h2}
	if bin, ok := clEngineBin(t, top, "29"); ok {
		h2.bin, h2.version = bin, "29"
	} else if bin, ok := clEngineBin(t, top, "26"); ok {
		h2.bin, h2.version = bin, "26"
	}

	// Directories first: their removal then runs after the engines stopped.
	for _, h := range c.hosts {
		h.state = t.TempDir()
	}
	c.pluginDir = t.TempDir()
	c.imageTar = filepath.Join(t.TempDir(), "busybox.tar")
	wgCleanup(c.engine2, c.hosts)
	t.Cleanup(func() { wgCleanup(c.engine2, c.hosts) })

	testkit.MustRun(t, "ip", "netns", "add", wgUL)
	testkit.MustRun(t, "ip", "-n", wgUL, "link", "set", "lo", "up")
	testkit.MustRun(t, "ip", "-n", wgUL, "link", "add", wgBridge, "type", "bridge")
	testkit.MustRun(t, "ip", "-n", wgUL, "addr", "add", wgULAddr+"/24", "dev", wgBridge)
	testkit.MustRun(t, "ip", "-n", wgUL, "link", "set", wgBridge, "up")
	c.agent = consul.Start(t, consul.Options{NetNS: wgUL, Bind: wgULAddr, Client: wgULAddr})

	if out, err := testkit.RunWithin(cmdTimeout, filepath.Join(top, "scripts", "plugin-rootfs.sh"), c.pluginDir); err != nil {
		t.Fatalf("plugin rootfs: %v\n%s", err, out)
	}
	// TestMain built the image in this machine's engine.
	if out, err := testkit.RunWithin(cmdTimeout, "docker", "save", "-o", c.imageTar, image); err != nil {
		t.Fatalf("docker save %s: %v\n%s", image, err, out)
	}
	for _, h := range c.hosts {
		wgNetns(t, h)
	}
	errs := make(chan error, len(c.hosts))
	for _, h := range c.hosts {
		go func() { errs <- c.startEngine(t, h) }()
	}
	var failed []string
	for range c.hosts {
		if err := <-errs; err != nil {
			failed = append(failed, err.Error())
		}
	}
	for _, h := range c.hosts {
		t.Cleanup(func() { // runs before the engines stop (wgCleanup)
			if t.Failed() {
				wgDiagnostics(t, h)
			}
		})
	}
	if len(failed) > 0 {
		t.Fatal(strings.Join(failed, "\n"))
	}
	for _, h := range c.hosts {
		c.installFelt(t, h)
	}

	// Everything between the hosts from here on goes through the capture,
	// the handshakes included; the containers' address pairs join the
	// secrets once known.
	capt := startWGCapture(t, wgUL, "fwg-"+h1.name, netip.MustParseAddr(h1.addr), netip.MustParseAddr(h2.addr))
	capt.secret("the payload marker", []byte(wgMarker))

	// The network, created once: felt declares it on h2 too.
	want := h1.create(t, wgNet, wgPool, "-o", "backend=wireguard")
	if want.Options["backend"] != "wireguard" {
		t.Fatalf("h1: network options %v, want backend=wireguard", want.Options)
	}
	waitNet(t, clConverge, want, wgPool, h2)
	a := h1.run(t, "felt-wg-a", wgNet)
	b := h2.run(t, "felt-wg-b", wgNet)
	subA, _ := a.Prefix(24)
	subB, _ := b.Prefix(24)
	if subA == subB || !netip.MustParsePrefix(wgPool).Contains(a) || !netip.MustParsePrefix(wgPool).Contains(b) {
		t.Fatalf("containers %s (h1) and %s (h2): want addresses of different /24s of %s", a, b, wgPool)
	}
	t.Logf("h1 (Docker %s): container %s; h2 (Docker %s): container %s", h1.version, a, h2.version, b)

	a4, b4 := a.As4(), b.As4()
	capt.secret("an inner IP header (h1's container → h2's)", append(a4[:], b4[:]...))
	capt.secret("an inner IP header (h2's container → h1's)", append(b4[:], a4[:]...))

	pingUntil(t, h1.e, "felt-wg-a", b.String())
	pingUntil(t, h2.e, "felt-wg-b", a.String())

	// TCP: 8 MB of random bytes over HTTP (super-packets cut to the
	// device's MTU and back), a file of the marker, and nc both ways.
	sum := h2.e.must(t, "exec", "felt-wg-b", "sh", "-c",
		"mkdir -p /www && dd if=/dev/urandom of=/www/rand bs=1M count=8 2>/dev/null && echo "+wgMarker+" >/www/m && "+
			"for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do cat /www/m /www/m >/www/m2 && mv /www/m2 /www/m; done && "+
			"httpd -p 8080 -h /www && md5sum /www/rand")
	got := h1.e.must(t, "exec", "felt-wg-a", "sh", "-c", fmt.Sprintf("wget -q -O - http://%s:8080/rand | md5sum", b))
	if f, g := strings.Fields(sum), strings.Fields(got); len(f) == 0 || len(g) == 0 || f[0] != g[0] {
		t.Fatalf("8 MB over HTTP across the wireguard backend: md5 %q at the server, %q received", sum, got)
	}
	mlen := (len(wgMarker) + 1) << 16
	if n := h1.e.must(t, "exec", "felt-wg-a", "sh", "-c", fmt.Sprintf("wget -q -O - http://%s:8080/m | wc -c", b)); n != fmt.Sprint(mlen) {
		t.Fatalf("the marker file across the wireguard backend: %s bytes received, want %d", n, mlen)
	}
	ncAcross(t, h2, "felt-wg-b", h1, "felt-wg-a", b)
	ncAcross(t, h1, "felt-wg-a", h2, "felt-wg-b", a)

	capt.stop()
	st := capt.result()
	t.Logf("capture on %s: %d frames, %d between the hosts, WireGuard messages by type (first message of a frame) %v, %d bytes of WireGuard payload, %d ICMP unreachable answering WireGuard messages, %d frames dropped by the kernel",
		capt.ifname, st.frames, st.between, st.msgs, st.wgBytes, st.unreachable, st.dropped)
	for _, p := range st.bad {
		t.Errorf("capture on the underlay: %s", p)
	}
	// The hosts' first handshake, and at least the 8 MB (and the marker
	// file) as WireGuard data.
	if st.msgs[1] == 0 || st.msgs[2] == 0 {
		t.Errorf("capture on the underlay: no WireGuard handshake (initiation %d, response %d) between %s and %s", st.msgs[1], st.msgs[2], h1.addr, h2.addr)
	}
	if st.msgs[4] == 0 || st.wgBytes < 8<<20 {
		t.Errorf("capture on the underlay: %d WireGuard data frames with %d bytes: the 8 MB did not cross as WireGuard between %s and %s",
			st.msgs[4], st.wgBytes, h1.addr, h2.addr)
	}

	// Which WireGuard, and where its UAPI socket lives.
	dev := "feltw." + poolHex(t, wgPool)
	impl := wgImplementation(t, h1)
	if impl2 := wgImplementation(t, h2); impl2 != impl {
		t.Errorf("h1 uses %s WireGuard, h2 %s: both hosts are one kernel here", impl, impl2)
	}
	keys := wgLeaseKeys(t, c.agent, wgPool)
	if len(keys) != 2 || keys[h1.addr] == "" || keys[h2.addr] == "" || keys[h1.addr] == keys[h2.addr] {
		t.Fatalf("WireGuard public keys in the leases of %s: %v, want a key of its own for each of %s and %s", wgPool, keys, h1.addr, h2.addr)
	}
	pids := map[*clHost]int{} // user space: the plugins holding a UAPI socket
	if impl == "user space" {
		dirs := map[*clHost]os.FileInfo{}
		for _, x := range []struct{ h, peer *clHost }{{h1, h2}, {h2, h1}} {
			pid := x.h.pluginPID(t)
			if pid == 0 {
				t.Fatalf("%s: plugin process not found", x.h.name)
			}
			pids[x.h] = pid
			dir := fmt.Sprintf("/proc/%d/root/var/run/wireguard", pid)
			fi, err := os.Stat(dir)
			if err != nil || !fi.IsDir() {
				t.Fatalf("%s: the plugin has no /var/run/wireguard in its rootfs: %v", x.h.name, err)
			}
			dirs[x.h] = fi
			d := uapiGet(t, x.h, filepath.Join(dir, dev+".sock"))
			t.Logf("%s: %s's UAPI socket in the plugin's /var/run/wireguard: listen_port %d, peers %+v", x.h.name, dev, d.listenPort, d.peers)
			if d.listenPort != wgPort {
				t.Errorf("%s: %s listens on port %d, want %d", x.h.name, dev, d.listenPort, wgPort)
			}
			peerSub := subB
			if x.h == h2 {
				peerSub = subA
			}
			wantPeer := uapiPeer{publicKey: keys[x.peer.addr], endpoint: fmt.Sprintf("%s:%d", x.peer.addr, wgPort), allowedIPs: []string{peerSub.String()}}
			if len(d.peers) != 1 || d.peers[0].publicKey != wantPeer.publicKey || d.peers[0].endpoint != wantPeer.endpoint || !slices.Equal(d.peers[0].allowedIPs, wantPeer.allowedIPs) {
				t.Errorf("%s: %s's peers %+v, want only %s's: %+v", x.h.name, dev, d.peers, x.peer.name, wantPeer)
			} else if d.peers[0].handshake == 0 || d.peers[0].rx < 8<<20 && d.peers[0].tx < 8<<20 {
				t.Errorf("%s: peer %s: last handshake %d, rx %d, tx %d bytes: want a handshake and the 8 MB", x.h.name, x.peer.name, d.peers[0].handshake, d.peers[0].rx, d.peers[0].tx)
			}
		}
		if os.SameFile(dirs[h1], dirs[h2]) {
			t.Errorf("the plugins of both engines share one /var/run/wireguard: their sockets of %s would collide", dev)
		}
		// Not the host's: the plugin keeps its sockets in its rootfs.
		if _, err := os.Stat(filepath.Join("/var/run/wireguard", dev+".sock")); err == nil {
			t.Errorf("/var/run/wireguard/%s.sock on the host: a plugin put its socket outside its rootfs", dev)
		}
	}
	wgStatus(t, h1, h2, dev, impl, keys, subB)
	wgStatus(t, h2, h1, dev, impl, keys, subA)

	// kill -9 h1's plugin: Docker starts it again, and the new felt sets
	// the device up anew with the same key (from its state directory).
	// In user space the dead felt's UAPI socket file is still in the
	// plugin's rootfs, which outlives the process: the new one must take
	// the path over, or wgctrl could not configure the device.
	old := h1.pluginPID(t)
	testkit.MustRun(t, "kill", "-9", fmt.Sprint(old))
	var restarted int
	testkit.WaitFor(t, "Docker to restart h1's killed plugin", func() bool {
		restarted = h1.pluginPID(t)
		return restarted != 0 && restarted != old
	})
	pingUntil(t, h1.e, "felt-wg-a", b.String())
	pingUntil(t, h2.e, "felt-wg-b", a.String())
	ncAcross(t, h2, "felt-wg-b", h1, "felt-wg-a", b)
	if impl == "user space" {
		pids[h1] = restarted
		d := uapiGet(t, h1, fmt.Sprintf("/proc/%d/root/var/run/wireguard/%s.sock", restarted, dev))
		if len(d.peers) != 1 || d.peers[0].publicKey != keys[h2.addr] || d.listenPort != wgPort {
			t.Errorf("h1 after its plugin's restart: %s listens on %d with peers %+v, want %d and only h2's key %s", dev, d.listenPort, d.peers, wgPort, keys[h2.addr])
		}
	}
	if k := wgLeaseKeys(t, c.agent, wgPool); k[h1.addr] != keys[h1.addr] {
		t.Errorf("h1's WireGuard key after its plugin's restart: %s, was %s: the key pair must survive restarts", k[h1.addr], keys[h1.addr])
	}

	// Removal: containers, then the network on h1 (felt removes it on h2):
	// no device and no route to the other's subnet left on either host.
	for _, x := range []struct {
		h   *clHost
		ctr string
	}{{h1, "felt-wg-a"}, {h2, "felt-wg-b"}} {
		x.h.e.must(t, "rm", "-f", x.ctr)
	}
	h1.e.must(t, "network", "rm", wgNet)
	waitGone(t, clConverge, wgNet, h1, h2)
	for _, h := range c.hosts {
		testkit.WaitFor(t, h.name+": "+dev+" removed", func() bool {
			out, _ := testkit.RunWithin(cmdTimeout, "ip", "-n", h.ns, "-o", "link", "show")
			return !strings.Contains(out, dev)
		})
		if out := testkit.MustRun(t, "ip", "-n", h.ns, "route", "show", "table", "all"); strings.Contains(out, "10.74.") {
			t.Errorf("%s: routes of %s left after the network's removal:\n%s", h.name, wgPool, out)
		}
		// Teardown closed the UAPI listener, which unlinks its socket.
		if pid := pids[h]; pid != 0 {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/var/run/wireguard/%s.sock", pid, dev)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s.sock still in the plugin's /var/run/wireguard after the network's removal (%v)", h.name, dev, err)
			}
		}
	}
}

// wgNetns makes h's namespace and its link to the underlay bridge
// (fwg-<host> there, ul0 in h's namespace: the plugin's FELT_IFACE).
func wgNetns(t testing.TB, h *clHost) {
	t.Helper()
	testkit.MustRun(t, "ip", "netns", "add", h.ns)
	testkit.MustRun(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
	peer := "fwg-" + h.name
	testkit.MustRun(t, "ip", "-n", wgUL, "link", "add", peer, "type", "veth", "peer", "name", clHostIF, "netns", h.ns)
	testkit.MustRun(t, "ip", "-n", wgUL, "link", "set", peer, "master", wgBridge, "up")
	testkit.MustRun(t, "ip", "-n", h.ns, "addr", "add", h.addr+"/24", "dev", clHostIF)
	testkit.MustRun(t, "ip", "-n", h.ns, "link", "set", clHostIF, "up")
	testkit.MustRun(t, "ip", "-n", h.ns, "route", "add", "default", "via", wgULAddr)
}

// wgCleanup stops the engines (containers, networks and plugins go with
// them) and removes the hosts' namespaces and the underlay's; also what an
// interrupted run left.
func wgCleanup(engine2 string, hosts []*clHost) {
	for _, h := range hosts {
		clStopHost(engine2, h.ns)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", wgUL)); err == nil {
		_, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", wgUL)
	}
}

// ncAcross: a one-shot nc server in container srv on host hs sends a line
// with the marker; the client container on hc connects to addr until it
// gets the line.
func ncAcross(t testing.TB, hs *clHost, srv string, hc *clHost, cli string, addr netip.Addr) {
	t.Helper()
	line := wgMarker + "-nc-from-" + hs.name
	hs.e.must(t, "exec", "-d", srv, "nc", "-l", "-p", "7000", "-e", "echo", line)
	deadline := time.Now().Add(pingTimeout)
	for {
		out, err := hc.e.docker("exec", cli, "timeout", "10", "nc", "-w", "3", addr.String(), "7000")
		if err == nil && strings.Contains(out, line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nc from %s on %s to %s:7000 on %s: %v %q, want %q", cli, hc.name, addr, hs.name, err, out, line)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// poolHex is the pool address in hex, as felt names its devices
// (feltw.0a4a0000).
func poolHex(t testing.TB, pool string) string {
	t.Helper()
	a := netip.MustParsePrefix(pool).Addr().As4()
	return hex.EncodeToString(a[:])
}

// wgImplementation is which WireGuard h's felt says (in its log) it uses:
// "kernel" or "user space".
func wgImplementation(t testing.TB, h *clHost) string {
	t.Helper()
	var line string
	testkit.WaitFor(t, h.name+": felt logs which WireGuard it uses", func() bool {
		ls := h.pluginLines(t, 0, []string{"wireguard", "using kernel wireguard|wireguard-go in user space"}, nil)
		if len(ls) > 0 {
			line = ls[len(ls)-1]
		}
		return line != ""
	})
	t.Logf("%s: %s", h.name, line)
	if strings.Contains(strings.ToLower(line), "user space") {
		return "user space"
	}
	return "kernel"
}

// wgLeaseKeys are the WireGuard public keys in pool's leases in Consul, by
// the holder's public IP, in hex as UAPI shows them.
func wgLeaseKeys(t testing.TB, agent *consul.Agent, pool string) map[string]string {
	t.Helper()
	cfg := agent.APIConfig()
	// Consul listens inside the underlay's namespace.
	cfg.Transport = testkit.NetNSTransport(wgUL)
	s, err := consulkv.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ls, err := lease.NewRegistry(s, "felt/", nil).Leases(ctx, netip.MustParsePrefix(pool))
	if err != nil {
		t.Fatalf("leases in Consul: %v", err)
	}
	keys := map[string]string{}
	for _, l := range ls {
		var d struct {
			Key string `json:"wgPublicKey"`
		}
		if err := json.Unmarshal(l.BackendData, &d); err != nil {
			t.Fatalf("lease %s of %s: backend data %s: %v", l.Subnet, l.PublicIP, l.BackendData, err)
		}
		k, err := base64.StdEncoding.DecodeString(d.Key)
		if err != nil || len(k) != 32 {
			t.Fatalf("lease %s of %s: wgPublicKey %q is not a base64 key of 32 bytes (%v)", l.Subnet, l.PublicIP, d.Key, err)
		}
		keys[l.PublicIP.String()] = hex.EncodeToString(k)
	}
	return keys
}

// uapiDevice is what a WireGuard UAPI get=1 answers (the parts checked).
type uapiDevice struct {
	listenPort int
	peers      []uapiPeer
}

type uapiPeer struct {
	publicKey, endpoint string
	allowedIPs          []string
	handshake           int64 // last_handshake_time_sec
	rx, tx              int64
}

// uapiGet asks wireguard-go's UAPI socket at path for its configuration
// (the cross-platform protocol wgctrl speaks: get=1, then key=value lines
// up to an empty one). The private key is read and dropped.
func uapiGet(t testing.TB, h *clHost, path string) uapiDevice {
	t.Helper()
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: the UAPI socket %s: %v", h.name, path, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("get=1\n\n")); err != nil {
		t.Fatalf("%s: %s: %v", h.name, path, err)
	}
	var d uapiDevice
	var p *uapiPeer
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "":
			return d
		case "errno":
			if v != "0" {
				t.Fatalf("%s: %s answered errno=%s", h.name, path, v)
			}
		case "listen_port":
			_, _ = fmt.Sscan(v, &d.listenPort)
		case "public_key":
			d.peers = append(d.peers, uapiPeer{publicKey: v})
			p = &d.peers[len(d.peers)-1]
		case "endpoint":
			if p != nil {
				p.endpoint = v
			}
		case "allowed_ip":
			if p != nil {
				p.allowedIPs = append(p.allowedIPs, v)
			}
		case "last_handshake_time_sec":
			if p != nil {
				_, _ = fmt.Sscan(v, &p.handshake)
			}
		case "rx_bytes":
			if p != nil {
				_, _ = fmt.Sscan(v, &p.rx)
			}
		case "tx_bytes":
			if p != nil {
				_, _ = fmt.Sscan(v, &p.tx)
			}
		}
	}
	t.Fatalf("%s: %s: the answer ended without an empty line: %v", h.name, path, sc.Err())
	return d
}

// wgStatus checks felt status --json on h (run inside the plugin, on its
// socket): the wireguard network's device, its implementation, this
// host's public key and port, and one peer, the other host, with its key
// from its lease, its endpoint and subnet, a handshake and traffic.
func wgStatus(t testing.TB, h, peer *clHost, dev, impl string, keys map[string]string, peerSub netip.Prefix) {
	t.Helper()
	pid := h.pluginPID(t)
	if pid == 0 {
		t.Fatalf("%s: plugin process not found", h.name)
	}
	out, err := testkit.RunWithin(cmdTimeout, "nsenter", "-t", fmt.Sprint(pid), "-m", "-n", "/felt", "status", "--json", "--socket", "/run/docker/plugins/felt.sock")
	var st feltplugin.Status
	if jerr := json.Unmarshal([]byte(out), &st); jerr != nil {
		t.Fatalf("%s: felt status --json in the plugin: %v %v\n%s", h.name, err, jerr, out)
	}
	hexKey := func(b64 string) string {
		k, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return "not base64: " + b64
		}
		return hex.EncodeToString(k)
	}
	for _, n := range st.Networks {
		if n.Backend != "wireguard" {
			continue
		}
		w := n.WireGuard
		if w == nil {
			t.Fatalf("%s: felt status: the wireguard network has no device status", h.name)
		}
		b, _ := json.Marshal(w)
		t.Logf("%s: felt status: %s", h.name, b)
		wantImpl := map[string]string{"user space": "userspace", "kernel": "kernel"}[impl]
		if w.Implementation != wantImpl || w.Device != dev || w.ListenPort != wgPort || w.Error != "" || hexKey(w.PublicKey) != keys[h.addr] {
			t.Errorf("%s: felt status: implementation %q device %q port %d error %q public key %q; want %q, %q, %d, no error and the key of its lease (hex %s)",
				h.name, w.Implementation, w.Device, w.ListenPort, w.Error, w.PublicKey, wantImpl, dev, wgPort, keys[h.addr])
		}
		if len(w.Peers) != 1 {
			t.Fatalf("%s: felt status: WireGuard peers %+v, want only %s", h.name, w.Peers, peer.name)
		}
		p := w.Peers[0]
		if hexKey(p.PublicKey) != keys[peer.addr] || p.Endpoint != fmt.Sprintf("%s:%d", peer.addr, wgPort) || !slices.Equal(p.AllowedIPs, []string{peerSub.String()}) ||
			p.LatestHandshake.IsZero() || p.RxBytes < 8<<20 && p.TxBytes < 8<<20 {
			t.Errorf("%s: felt status: WireGuard peer %+v, want %s's key (hex %s), endpoint %s:%d, allowed %s, a handshake and the 8 MB",
				h.name, p, peer.name, keys[peer.addr], peer.addr, wgPort, peerSub)
		}
		return
	}
	t.Errorf("%s: felt status --json lists no wireguard network:\n%s", h.name, out)
}

// wgDiagnostics logs what helps understand a failure on h: the plugin's
// wireguard lines, warnings and errors, routes and links, and keeps the
// whole dockerd log (engine2.sh stop removes it).
func wgDiagnostics(t testing.TB, h *clHost) {
	if h.e.host == "" {
		return
	}
	b, _ := os.ReadFile(h.log)
	keepAll := filepath.Join(os.TempDir(), "felt-wireguard-"+h.ns+"-dockerd.log")
	if err := os.WriteFile(keepAll, b, 0o644); err == nil {
		t.Logf("%s: its whole dockerd log is kept in %s", h.name, keepAll)
	}
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "engine2:") || (strings.Contains(l, "plugin=") && (strings.Contains(strings.ToLower(l), "wireguard") ||
			strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR"))) {
			keep = append(keep, l)
		}
	}
	t.Logf("%s: dockerd log (%s), the plugin's wireguard lines, warnings, errors:\n%s", h.name, h.log, strings.Join(lastN(keep, 60), "\n"))
	for _, cmd := range [][]string{{"ip", "-n", h.ns, "route"}, {"ip", "-n", h.ns, "-d", "link", "show"}} {
		out, _ := testkit.RunWithin(cmdTimeout, cmd...)
		t.Logf("%s: %s:\n%s", h.name, strings.Join(cmd, " "), out)
	}
}

// wgCapture reads every frame on one link of the underlay (an AF_PACKET
// socket bound to it, inside its namespace) and judges each as it comes:
// frames between the two hosts must be WireGuard messages, and no frame
// may hold any of the secrets.
type wgCapture struct {
	ifname string
	fd     int
	h1, h2 [4]byte
	halt   atomic.Bool
	done   chan struct{}
	once   sync.Once

	mu      sync.Mutex
	secrets map[string][]byte // what each means: bytes no frame may hold
	res     wgCaptureResult
}

type wgCaptureResult struct {
	frames, between int
	// msgs counts frames between the hosts by the type of the WireGuard
	// message they start with: 1 initiation, 2 response, 3 cookie, 4 data.
	msgs    [5]int
	wgBytes int // UDP payload bytes between the hosts
	// unreachable counts ICMP errors answering a WireGuard message (a
	// peer's port not open yet).
	unreachable int
	dropped     uint32
	bad         []string // the first problems found
}

func startWGCapture(t testing.TB, ns, ifname string, h1, h2 netip.Addr) *wgCapture {
	t.Helper()
	c := &wgCapture{ifname: ifname, h1: h1.As4(), h2: h2.As4(), secrets: map[string][]byte{}, done: make(chan struct{})}
	handle, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("capture: namespace %s: %v", ns, err)
	}
	defer handle.Close()
	proto := htons(unix.ETH_P_ALL)
	// The socket stays in the namespace it was made in.
	err = nsutil.Do(handle, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(c.fd)
			return fmt.Errorf("binding to %s: %w", ifname, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", ifname, ns, err)
	}
	// Room for bursts: a frame lost here is only a frame not judged.
	_ = unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
	_ = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200_000})
	go c.loop()
	t.Cleanup(c.stop)
	return c
}

// secret adds bytes no frame may hold from now on.
func (c *wgCapture) secret(what string, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.secrets[what] = b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *wgCapture) loop() {
	defer close(c.done)
	buf := make([]byte, 256<<10) // GSO super-packets cross veths whole
	for !c.halt.Load() {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			c.problem(fmt.Sprintf("reading: %v", err))
			return
		}
		c.judge(buf[:n])
	}
}

// stop ends the capture; idempotent.
func (c *wgCapture) stop() {
	c.once.Do(func() {
		c.halt.Store(true)
		<-c.done
		if st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			c.mu.Lock()
			c.res.dropped = st.Drops
			c.mu.Unlock()
		}
		unix.Close(c.fd)
	})
}

func (c *wgCapture) result() wgCaptureResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.res
	r.bad = slices.Clone(r.bad)
	return r
}

func (c *wgCapture) problem(p string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.res.bad) < 10 {
		c.res.bad = append(c.res.bad, p)
	}
}

func (c *wgCapture) judge(f []byte) {
	c.mu.Lock()
	c.res.frames++
	secrets := maps.Clone(c.secrets)
	c.mu.Unlock()
	for what, s := range secrets {
		if bytes.Contains(f, s) {
			c.problem(fmt.Sprintf("a frame of %d bytes holds %s in clear", len(f), what))
		}
	}
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return // ARP, IPv6 neighbour discovery: not between the hosts' IPv4 addresses
	}
	ip := f[14:]
	src, dst := [4]byte(ip[12:16]), [4]byte(ip[16:20])
	if !(src == c.h1 && dst == c.h2 || src == c.h2 && dst == c.h1) {
		return // Consul on the underlay's own address
	}
	route := fmt.Sprintf("%s → %s", netip.AddrFrom4(src), netip.AddrFrom4(dst))
	c.mu.Lock()
	c.res.between++
	c.mu.Unlock()
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] == unix.IPPROTO_ICMP && len(ip) >= ihl+8 && ip[ihl] == 3 {
		// Destination unreachable: a host's answer to a WireGuard message
		// that found no socket on the port (its device not listening
		// yet: the peer learnt of it from its lease first). Allowed only
		// when it quotes a WireGuard message between the hosts' ports in
		// the other direction; the quote is checked for secrets above.
		if why := wgDatagram(ip[ihl+8:], dst, src); why != "" {
			c.problem(fmt.Sprintf("%s: ICMP unreachable (code %d) quoting %s", route, ip[ihl+1], why))
			return
		}
		c.mu.Lock()
		c.res.unreachable++
		c.mu.Unlock()
		return
	}
	if ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8+4 {
		c.problem(fmt.Sprintf("%s: IP protocol %d, %d bytes: not a WireGuard datagram", route, ip[9], len(ip)))
		return
	}
	if why := wgDatagram(ip, src, dst); why != "" {
		c.problem(fmt.Sprintf("%s: %s", route, why))
		return
	}
	payload := ip[ihl+8:]
	c.mu.Lock()
	c.res.msgs[payload[0]]++
	c.res.wgBytes += len(payload)
	c.mu.Unlock()
}

// wgDatagram says why ip (an IPv4 packet, or the start of one quoted by
// an ICMP error) is not a WireGuard message from src to dst between the
// WireGuard ports, or "" if it is one.
func wgDatagram(ip []byte, src, dst [4]byte) string {
	if len(ip) < 20 {
		return fmt.Sprintf("%d bytes: not an IP packet", len(ip))
	}
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8+4 {
		return fmt.Sprintf("IP protocol %d, %d bytes: not a WireGuard datagram", ip[9], len(ip))
	}
	if [4]byte(ip[12:16]) != src || [4]byte(ip[16:20]) != dst {
		return fmt.Sprintf("a datagram %s → %s: not between the hosts", netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])))
	}
	udp := ip[ihl:]
	sport, dport := binary.BigEndian.Uint16(udp[0:2]), binary.BigEndian.Uint16(udp[2:4])
	payload := udp[8:]
	if typ := payload[0]; sport != wgPort || dport != wgPort || typ < 1 || typ > 4 || payload[1] != 0 || payload[2] != 0 || payload[3] != 0 {
		return fmt.Sprintf("UDP %d → %d starting % x: not a WireGuard message between the ports %d", sport, dport, payload[:4], wgPort)
	}
	return ""
}

// TestWGCaptureJudge checks the capture's verdicts on hand-made frames:
// WireGuard between the ports passes, an ICMP unreachable quoting one
// passes (counted apart), anything else between the hosts is a problem.
func TestWGCaptureJudge(t *testing.T) {
	h1, h2 := [4]byte{192, 168, 97, 11}, [4]byte{192, 168, 97, 12}
	ipv4 := func(proto byte, src, dst [4]byte, body []byte) []byte {
		ip := make([]byte, 20, 20+len(body))
		ip[0], ip[9] = 0x45, proto
		binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(body)))
		copy(ip[12:16], src[:])
		copy(ip[16:20], dst[:])
		return append(ip, body...)
	}
	udp := func(sport, dport uint16, payload []byte) []byte {
		u := make([]byte, 8, 8+len(payload))
		binary.BigEndian.PutUint16(u[0:2], sport)
		binary.BigEndian.PutUint16(u[2:4], dport)
		return append(u, payload...)
	}
	icmpUnreach := func(quoted []byte) []byte {
		return append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, quoted...)
	}
	frame := func(ip []byte) []byte {
		return append([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00}, ip...)
	}
	initiation := append([]byte{1, 0, 0, 0}, make([]byte, 144)...)
	wg := ipv4(unix.IPPROTO_UDP, h1, h2, udp(wgPort, wgPort, initiation))

	for _, tc := range []struct {
		name        string
		frame       []byte
		bad         string // a substring of the problem, "" for none
		unreachable int
	}{
		{"handshake initiation", frame(wg), "", 0},
		{"unreachable quoting WireGuard", frame(ipv4(unix.IPPROTO_ICMP, h2, h1, icmpUnreach(wg))), "", 1},
		{"unreachable quoting another port", frame(ipv4(unix.IPPROTO_ICMP, h2, h1, icmpUnreach(ipv4(unix.IPPROTO_UDP, h1, h2, udp(4789, 4789, initiation))))), "ICMP unreachable (code 3) quoting UDP 4789", 0},
		{"unreachable quoting the wrong direction", frame(ipv4(unix.IPPROTO_ICMP, h2, h1, icmpUnreach(ipv4(unix.IPPROTO_UDP, h2, h1, udp(wgPort, wgPort, initiation))))), "not between the hosts", 0},
		{"echo request", frame(ipv4(unix.IPPROTO_ICMP, h1, h2, []byte{8, 0, 0, 0, 0, 1, 0, 1})), "IP protocol 1", 0},
		{"vxlan", frame(ipv4(unix.IPPROTO_UDP, h1, h2, udp(4789, 4789, initiation))), "not a WireGuard message", 0},
		{"the marker in a WireGuard frame", frame(ipv4(unix.IPPROTO_UDP, h1, h2, udp(wgPort, wgPort, append([]byte{4, 0, 0, 0}, wgMarker...)))), "holds the payload marker in clear", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &wgCapture{h1: h1, h2: h2, secrets: map[string][]byte{"the payload marker": []byte(wgMarker)}}
			c.judge(tc.frame)
			r := c.result()
			if r.between != 1 || r.unreachable != tc.unreachable {
				t.Errorf("between %d, unreachable %d: want 1, %d", r.between, r.unreachable, tc.unreachable)
			}
			switch {
			case tc.bad == "" && len(r.bad) > 0:
				t.Errorf("problems %q, want none", r.bad)
			case tc.bad != "" && (len(r.bad) == 0 || !strings.Contains(r.bad[0], tc.bad)):
				t.Errorf("problems %q, want one with %q", r.bad, tc.bad)
			}
		})
	}
}
