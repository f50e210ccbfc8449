package integration

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
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/plugin"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// What the wireguard tests share: reading a host's WireGuard device, the
// keys its leases publish, capturing frames in a namespace, and checking
// that what crossed the underlay was WireGuard and nothing else.

// wgDeviceName is the wireguard device of pool on a host: feltw. and the
// pool's address in hex, as udp's feltu.0a2a0000.
func wgDeviceName(pool netip.Prefix) string {
	return fmt.Sprintf("feltw.%08x", binary.BigEndian.Uint32(pool.Addr().AsSlice()))
}

// wgDevice is what a device's UAPI "get" answers: its port and peers.
type wgDevice struct {
	ListenPort int
	Peers      []wgPeer
}

// wgPeer is one peer of a device; PublicKey is base64, as leases carry it.
type wgPeer struct {
	PublicKey  string
	Endpoint   string
	AllowedIPs []string
}

// keys are the peers' public keys.
func (d wgDevice) keys() []string {
	var k []string
	for _, p := range d.Peers {
		k = append(k, p.PublicKey)
	}
	return k
}

// errNoUAPI: the device has no UAPI socket (kernel WireGuard, or no
// device).
var errNoUAPI = errors.New("no UAPI socket")

// readWGDevice asks the wireguard-go device of pool in h's felt for its
// configuration over its UAPI socket, the protocol wgctrl speaks. The socket
// is in felt's private /var/run/wireguard (hosts.Host.Start), reached
// through /proc/PID/root, which resolves paths in felt's mount namespace.
func readWGDevice(h *hosts.Host, pool netip.Prefix) (wgDevice, error) {
	pid := h.PID()
	if pid == 0 {
		return wgDevice{}, fmt.Errorf("%s: felt is not running", h.NS)
	}
	run, err := filepath.EvalSymlinks("/var/run") // /run: an absolute symlink would resolve in our root, not felt's
	if err != nil {
		return wgDevice{}, err
	}
	sock := filepath.Join("/proc", strconv.Itoa(pid), "root", run, "wireguard", wgDeviceName(pool)+".sock")
	if _, err := os.Stat(sock); errors.Is(err, fs.ErrNotExist) {
		return wgDevice{}, fmt.Errorf("%s: %s: %w", h.NS, sock, errNoUAPI)
	}
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return wgDevice{}, fmt.Errorf("%s: %w", h.NS, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		return wgDevice{}, fmt.Errorf("%s: UAPI get: %w", h.NS, err)
	}
	var d wgDevice
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "errno":
			if v != "0" {
				return wgDevice{}, fmt.Errorf("%s: UAPI get: errno %s", h.NS, v)
			}
		case "listen_port":
			d.ListenPort, _ = strconv.Atoi(v)
		case "public_key":
			b, err := hex.DecodeString(v)
			if err != nil {
				return wgDevice{}, fmt.Errorf("%s: UAPI get: public_key %q: %w", h.NS, v, err)
			}
			d.Peers = append(d.Peers, wgPeer{PublicKey: base64.StdEncoding.EncodeToString(b)})
		case "endpoint":
			if len(d.Peers) > 0 {
				d.Peers[len(d.Peers)-1].Endpoint = v
			}
		case "allowed_ip":
			if len(d.Peers) > 0 {
				p := &d.Peers[len(d.Peers)-1]
				p.AllowedIPs = append(p.AllowedIPs, v)
			}
		}
	}
	return d, sc.Err()
}

// peerKeys are the public keys of the peers h's felt has configured on
// pool's device, read over UAPI (wireguard-go), else, as with kernel
// WireGuard, from felt status --json.
func peerKeys(t *testing.T, h *hosts.Host, pool netip.Prefix) []string {
	t.Helper()
	d, err := readWGDevice(h, pool)
	if err == nil {
		return d.keys()
	}
	if !errors.Is(err, errNoUAPI) {
		t.Fatal(err)
	}
	return wgStatusOf(t, h, pool).keys()
}

// wgStatus is the wireguard part of a network in felt status --json.
type wgStatus struct{ *plugin.WireGuardStatus }

func (s wgStatus) keys() []string {
	var k []string
	if s.WireGuardStatus != nil {
		for _, p := range s.Peers {
			k = append(k, p.PublicKey)
		}
	}
	return k
}

// wgStatusOf is the wireguard status of pool's network in `felt status
// --json` on h (nil inside when felt shows none).
func wgStatusOf(t *testing.T, h *hosts.Host, pool netip.Prefix) wgStatus {
	t.Helper()
	_, st := statusJSON(t, h)
	for _, n := range st.Networks {
		if n.Pool == pool {
			return wgStatus{n.WireGuard}
		}
	}
	t.Fatalf("%s: felt status lists no network %s", h.NS, pool)
	return wgStatus{}
}

// leaseKeys maps each subnet leased in pool to the wgPublicKey its lease
// publishes ("" when it has none).
func leaseKeys(t *testing.T, c *hosts.Cluster, pool netip.Prefix) map[netip.Prefix]string {
	t.Helper()
	ls, err := registryOf(t, c).Leases(context.Background(), pool)
	testkit.Must(t, err)
	m := map[netip.Prefix]string{}
	for _, l := range ls {
		var d struct {
			Key string `json:"wgPublicKey"`
		}
		if len(l.BackendData) > 0 {
			if err := json.Unmarshal(l.BackendData, &d); err != nil {
				t.Fatalf("lease %s: backend data %s: %v", l.Subnet, l.BackendData, err)
			}
		}
		m[l.Subnet] = d.Key
	}
	return m
}

// validKey reports whether k is a base64 Curve25519 public key.
func validKey(k string) bool {
	b, err := base64.StdEncoding.DecodeString(k)
	return err == nil && len(b) == 32
}

// frame is one captured frame: the Ethernet frame and the GSO fields of
// its virtio-net header (PACKET_VNET_HDR), which say how a GSO super-packet
// is cut into the datagrams that go on the wire.
type frame struct {
	outgoing bool
	gsoType  uint8
	gsoSize  uint16
	data     []byte
}

// virtio_net_hdr's GSO types.
const (
	gsoNone  = 0
	gsoUDPL4 = 5
	gsoECN   = 0x80
)

// capture reads every frame on one interface of a namespace, both ways,
// with an AF_PACKET socket, until stop.
type capture struct {
	fd   int
	quit atomic.Bool
	done chan struct{}

	mu     sync.Mutex
	frames []frame
	err    error
	once   sync.Once
	drops  uint32
}

// startCapture captures on ifname in namespace ns; it is stopped at the
// test's end at the latest.
func startCapture(t *testing.T, ns, ifname string) *capture {
	t.Helper()
	c := &capture{fd: -1, done: make(chan struct{})}
	err := hosts.InNetNS(t, ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		// Protocol 0 until bound: no frames of other interfaces queue up.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		c.fd = fd
		// The virtio-net header tells a GSO super-packet (a UDP_SEGMENT
		// send, a GRO'd receive) from one datagram, and its segment size.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return fmt.Errorf("PACKET_VNET_HDR: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
			return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
		}
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("capture on %s in %s: %v", ifname, ns, err)
	}
	go c.loop()
	t.Cleanup(func() { c.stop() })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) loop() {
	defer close(c.done)
	buf := make([]byte, 1<<17)
	for {
		// Once told to stop, read what is queued, then end.
		quit := c.quit.Load()
		flags := 0
		if quit {
			flags = unix.MSG_DONTWAIT
		}
		n, from, err := unix.Recvfrom(c.fd, buf, flags)
		if errors.Is(err, unix.EAGAIN) && quit {
			return
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		if n < 10 {
			continue
		}
		f := frame{gsoType: buf[1], gsoSize: binary.NativeEndian.Uint16(buf[4:6]), data: bytes.Clone(buf[10:n])}
		if sa, ok := from.(*unix.SockaddrLinklayer); ok {
			f.outgoing = sa.Pkttype == unix.PACKET_OUTGOING
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
	}
}

// snapshot is what has been captured so far.
func (c *capture) snapshot() []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]frame(nil), c.frames...)
}

// stop ends the capture and returns its frames; it fails t if the socket
// failed or the kernel dropped frames (the capture would be incomplete,
// and a check of "every packet" vacuous).
func (c *capture) stop() ([]frame, error) {
	c.once.Do(func() {
		c.quit.Store(true)
		<-c.done
		st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err == nil {
			c.drops = st.Drops
		} else if c.err == nil {
			c.err = err
		}
		unix.Close(c.fd)
	})
	if c.err == nil && c.drops > 0 {
		return c.frames, fmt.Errorf("capture: the kernel dropped %d frames", c.drops)
	}
	return c.frames, c.err
}

// ipv4 is a parsed IPv4 packet in an Ethernet frame.
type ipv4 struct {
	src, dst netip.Addr
	proto    uint8
	frag     bool // a fragment (MF set or an offset)
	payload  []byte
}

// parseIPv4 parses an Ethernet frame holding IPv4 (ok false otherwise).
func parseIPv4(eth []byte) (ipv4, bool) {
	if len(eth) < 14+20 || binary.BigEndian.Uint16(eth[12:]) != unix.ETH_P_IP {
		return ipv4{}, false
	}
	ip := eth[14:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl {
		return ipv4{}, false
	}
	if total >= ihl && total < len(ip) { // Ethernet padding; 0 or more: a GSO packet's own
		ip = ip[:total]
	}
	return ipv4{
		src:     netip.AddrFrom4([4]byte(ip[12:16])),
		dst:     netip.AddrFrom4([4]byte(ip[16:20])),
		proto:   ip[9],
		frag:    binary.BigEndian.Uint16(ip[6:])&0x3fff != 0,
		payload: ip[ihl:],
	}, true
}

// underlayReport is what crossed the underlay between two hosts.
type underlayReport struct {
	packets   int    // IPv4 packets between the two hosts
	msgs      [5]int // WireGuard messages by type (index 0 unused)
	dataBytes int    // bytes of data messages
	problems  []string
	nProblems int
	kinds     map[string]int // problems by kind: clear, inner header, not UDP, port, message
	// toB are the data messages sent to host b (their receiver index is
	// b's), whole UDP payloads, for a test to forge and replay.
	toB [][]byte
}

func (r *underlayReport) problem(kind, format string, args ...any) {
	if r.kinds == nil {
		r.kinds = map[string]int{}
	}
	r.kinds[kind]++
	r.nProblems++
	if len(r.problems) < 12 {
		r.problems = append(r.problems, fmt.Sprintf(format, args...))
	}
}

// wgMessageOK checks one WireGuard message: a known type, reserved bytes
// zero, the length its type has. Data: a 16-byte header, the packet padded
// to a multiple of 16 bytes but not beyond the device's MTU (WireGuard's
// padding: a full-size packet of an MTU like 1420 stays 1420), a 16-byte
// tag.
func wgMessageOK(m []byte, mtu int) error {
	if len(m) < 4 {
		return fmt.Errorf("%d bytes: shorter than a WireGuard header", len(m))
	}
	if m[1] != 0 || m[2] != 0 || m[3] != 0 {
		return fmt.Errorf("type %d with reserved bytes % x", m[0], m[1:4])
	}
	switch m[0] {
	case 1:
		if len(m) != 148 {
			return fmt.Errorf("handshake initiation of %d bytes, want 148", len(m))
		}
	case 2:
		if len(m) != 92 {
			return fmt.Errorf("handshake response of %d bytes, want 92", len(m))
		}
	case 3:
		if len(m) != 64 {
			return fmt.Errorf("cookie reply of %d bytes, want 64", len(m))
		}
	case 4:
		if p := len(m) - 32; p < 0 || p > mtu || p%16 != 0 && p != mtu {
			return fmt.Errorf("data message of %d bytes, want 32 more than a multiple of 16 or the MTU %d, at most the MTU", len(m), mtu)
		}
	default:
		return fmt.Errorf("message type %d (first bytes % x)", m[0], m[:min(len(m), 16)])
	}
	return nil
}

// checkUnderlay looks at every frame captured between hosts a and b:
// each must be IPv4/UDP from port to port whose payload is WireGuard
// messages (a GSO super-packet cut at its segment size); no frame at all,
// between the hosts or not, may hold one of markers (bytes the test sent in
// clear inside the overlay) or an inner IPv4 header's address pair from
// inner (the containers' addresses, as src then dst).
func checkUnderlay(frames []frame, a, b netip.Addr, port uint16, mtu int, markers [][]byte, inner [][2]netip.Addr) underlayReport {
	var r underlayReport
	var pairs [][]byte
	for _, p := range inner {
		for _, sd := range [][2]netip.Addr{p, {p[1], p[0]}} {
			s, d := sd[0].As4(), sd[1].As4()
			pairs = append(pairs, append(s[:], d[:]...))
		}
	}
	for i, f := range frames {
		for _, m := range markers {
			if bytes.Contains(f.data, m) {
				r.problem("clear", "frame %d holds %q in clear", i, m)
			}
		}
		for _, p := range pairs {
			if bytes.Contains(f.data, p) {
				r.problem("inner header", "frame %d holds an inner IPv4 header %s -> %s", i, netip.AddrFrom4([4]byte(p[:4])), netip.AddrFrom4([4]byte(p[4:])))
			}
		}
		ip, ok := parseIPv4(f.data)
		if !ok || !(ip.src == a && ip.dst == b || ip.src == b && ip.dst == a) {
			continue
		}
		r.packets++
		if ip.proto != unix.IPPROTO_UDP || ip.frag || len(ip.payload) < 8 {
			r.problem("not UDP", "frame %d: %s -> %s protocol %d (fragment %v, %d bytes): not a UDP datagram", i, ip.src, ip.dst, ip.proto, ip.frag, len(ip.payload))
			continue
		}
		sport, dport := binary.BigEndian.Uint16(ip.payload), binary.BigEndian.Uint16(ip.payload[2:])
		if sport != port || dport != port {
			r.problem("port", "frame %d: %s:%d -> %s:%d: not the network's port %d", i, ip.src, sport, ip.dst, dport, port)
			continue
		}
		payload := ip.payload[8:]
		seg := len(payload)
		switch gt := f.gsoType &^ gsoECN; {
		case gt == gsoUDPL4 && f.gsoSize > 0:
			seg = int(f.gsoSize)
		case gt != gsoNone:
			r.problem("not UDP", "frame %d: GSO type %d: not a UDP datagram", i, f.gsoType)
			continue
		}
		for off := 0; off < len(payload); off += seg {
			m := payload[off:min(off+seg, len(payload))]
			if err := wgMessageOK(m, mtu); err != nil {
				r.problem("message", "frame %d: %s -> %s: %v", i, ip.src, ip.dst, err)
				continue
			}
			r.msgs[m[0]]++
			if m[0] == 4 {
				r.dataBytes += len(m)
				if ip.dst == b {
					r.toB = append(r.toB, bytes.Clone(m))
				}
			}
		}
	}
	return r
}

// count is the number of frames holding marker that came in (not sent) on
// the captured interface.
func count(frames []frame, marker []byte) int {
	n := 0
	for _, f := range frames {
		if !f.outgoing && bytes.Contains(f.data, marker) {
			n++
		}
	}
	return n
}

// sendUDP sends one UDP datagram with payload from inside namespace ns to
// dst:port.
func sendUDP(t *testing.T, ns string, dst netip.Addr, port int, payload []byte) {
	t.Helper()
	testkit.Must(t, hosts.InNetNS(t, ns, func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(dst, uint16(port)).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	}))
}

// rawSender sends IPv4 packets built whole (IPPROTO_RAW: the header as
// given, any source address) from inside a namespace.
type rawSender struct{ fd int }

func newRawSender(t *testing.T, ns string) *rawSender {
	t.Helper()
	s := &rawSender{fd: -1}
	testkit.Must(t, hosts.InNetNS(t, ns, func() (err error) {
		s.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	}))
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func (s *rawSender) send(t *testing.T, pkt []byte) {
	t.Helper()
	dst := [4]byte(pkt[16:20])
	if err := unix.Sendto(s.fd, pkt, 0, &unix.SockaddrInet4{Addr: dst}); err != nil {
		t.Fatalf("send forged packet to %s: %v", netip.AddrFrom4(dst), err)
	}
}

// ipPacket is an IPv4 header (with its checksum) before payload.
func ipPacket(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], uint16(time.Now().UnixNano()))
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], testkit.Checksum(h))
	return append(h, payload...)
}

// udpPacket is an IPv4/UDP packet (UDP checksum 0: none, as IPv4 allows).
func udpPacket(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u, sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	return ipPacket(src, dst, unix.IPPROTO_UDP, append(u, payload...))
}

// icmpEcho is an IPv4/ICMP echo request carrying payload.
func icmpEcho(src, dst netip.Addr, payload []byte) []byte {
	m := make([]byte, 8, 8+len(payload))
	m[0] = 8
	binary.BigEndian.PutUint16(m[4:], 0xfe17)
	binary.BigEndian.PutUint16(m[6:], 1)
	m = append(m, payload...)
	binary.BigEndian.PutUint16(m[2:], testkit.Checksum(m))
	return ipPacket(src, dst, unix.IPPROTO_ICMP, m)
}

// fakeData is a WireGuard data message (type 4) with receiver index idx
// and counter ctr whose "ciphertext" is inner in clear, padded to 16
// bytes, and a zero tag: what an attacker who saw an index on the wire can
// make without the keys.
func fakeData(idx uint32, ctr uint64, inner []byte) []byte {
	m := make([]byte, 16, 16+len(inner)+32)
	m[0] = 4
	binary.LittleEndian.PutUint32(m[4:], idx)
	binary.LittleEndian.PutUint64(m[8:], ctr)
	m = append(m, inner...)
	for len(m)%16 != 0 {
		m = append(m, 0)
	}
	return append(m, make([]byte, 16)...)
}

// attacker is a namespace on the underlay that is not a felt host, with
// address addr (CIDR) on the underlay bridge.
func attacker(t *testing.T, c *hosts.Cluster, addr string) string {
	t.Helper()
	ns := hosts.NewNS(t, "x")
	peer := fmt.Sprintf("x%d-%d", os.Getpid()%100000, attackerSeq.Add(1))
	testkit.MustRun(t, "ip", "link", "add", "ul0", "netns", ns, "type", "veth", "peer", "name", peer, "netns", c.UL)
	testkit.MustRun(t, "ip", "-n", c.UL, "link", "set", peer, "master", "br0", "up")
	testkit.MustRun(t, "ip", "-n", ns, "addr", "add", addr, "dev", "ul0")
	testkit.MustRun(t, "ip", "-n", ns, "link", "set", "ul0", "up")
	return ns
}

var attackerSeq atomic.Uint64

// markerData is size bytes of marker repeated.
func markerData(marker string, size int) []byte {
	return bytes.Repeat([]byte(marker), size/len(marker)+1)[:size]
}

// consulKV is every key under felt/ in the cluster's Consul, with its value.
func consulKV(t *testing.T, c *hosts.Cluster) (map[string][]byte, int, error) {
	t.Helper()
	client, err := consulapi.NewClient(c.ConsulConfig())
	if err != nil {
		return nil, 0, err
	}
	pairs, _, err := client.KV().List("felt/", nil)
	if err != nil {
		return nil, 0, err
	}
	m := map[string][]byte{}
	for _, p := range pairs {
		m[p.Key] = p.Value
	}
	return m, len(pairs), nil
}
