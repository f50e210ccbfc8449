package udp_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/testkit/netns"
	"github.com/felt-net/felt/testkit/testbed"
)

// portFree checks the udp port can be bound in ns: no socket holds it.
func portFree(t *testing.T, ns *netns.NS, port int) {
	t.Helper()
	err := ns.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s: udp port %d still taken: %v", ns.Name, port, err)
	}
}

// noDataPath checks no goroutine of the udp data path is left.
func noDataPath(t *testing.T) {
	t.Helper()
	var stacks string
	for range 50 {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "felt/overlay/udp.") || strings.Contains(stacks, "felt/overlay/udp/dataplane.") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("udp data path goroutines remain:\n%s", stacks)
}

// transfer sends size random bytes over TCP from one host's container to
// another's and checks they arrive intact.
func transfer(t *testing.T, from, to *testbed.Host, size int) {
	t.Helper()
	transferBetween(t, from.Ctr, to.Ctr, to.CtrIP(), size)
}

// sendTCP connects from inside ns to addr and sends data within timeout.
func sendTCP(ns *netns.NS, addr string, data []byte, timeout time.Duration) error {
	var conn net.Conn
	err := ns.Do(func() (err error) {
		conn, err = (&net.Dialer{Timeout: timeout}).Dial("tcp4", addr)
		return err
	})
	if err != nil {
		return fmt.Errorf("dial %s from %s: %w", addr, ns.Name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(data); err != nil {
		return fmt.Errorf("send to %s: %w", addr, err)
	}
	return nil
}

func listenUDP(t *testing.T, ns *netns.NS, at netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) { c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(at)); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", at, ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readUDP returns the next datagram's payload, or "" after timeout.
func readUDP(t *testing.T, c *net.UDPConn, timeout time.Duration) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

func sendDatagram(t *testing.T, ns *netns.NS, to netip.AddrPort, payload []byte) {
	t.Helper()
	sendDatagrams(t, ns, to, [][]byte{payload})
}

// sendDatagrams sends payloads to to from one socket in ns, as the chunks
// of a frame come from one sender.
func sendDatagrams(t *testing.T, ns *netns.NS, to netip.AddrPort, payloads [][]byte) {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) { c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to)); return err }); err != nil {
		t.Fatalf("dial %s in %s: %v", to, ns.Name, err)
	}
	defer c.Close()
	for _, p := range payloads {
		if _, err := c.Write(p); err != nil {
			t.Fatalf("send to %s: %v", to, err)
		}
	}
}

// udpPacket builds an IPv4 UDP packet (no UDP checksum, which IPv4 allows).
func udpPacket(src, dst netip.Addr, port uint16, payload string) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = unix.IPPROTO_UDP
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], port)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// listenTCP accepts connections at addr inside ns and discards what they
// send, until the test ends. It returns the address.
func listenTCP(t *testing.T, ns *netns.NS, at netip.AddrPort) string {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", at.String()); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", at, ns.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, conn); conn.Close() }()
		}
	}()
	return at.String()
}

// frameChunks cuts pkt into a frame of datagrams carrying size bytes of it
// each, as another felt would send it (overlay/udp/frame.go), with no
// offloads pending.
func frameChunks(pkt []byte, size int, id uint16) [][]byte {
	n := (len(pkt) + size - 1) / size
	var out [][]byte
	for k := range n {
		h := []byte{0xf1, 0, byte(k), byte(n), 0, 0, byte(id >> 8), byte(id)}
		out = append(out, append(h, pkt[k*size:min((k+1)*size, len(pkt))]...))
	}
	return out
}

// transferBetween sends size random bytes over TCP from namespace from to
// a listener at addr in namespace to and checks they arrive intact.
func transferBetween(t *testing.T, from, to *netns.NS, addr netip.Addr, size int) {
	t.Helper()
	at := netip.AddrPortFrom(addr, 5001).String()
	var ln net.Listener
	if err := to.Do(func() (err error) { ln, err = net.Listen("tcp4", at); return err }); err != nil {
		t.Fatalf("listen in %s: %v", to.Name, err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, conn)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	start := time.Now()
	if err := sendTCP(from, at, data, 60*time.Second); err != nil {
		t.Fatalf("%s -> %s: %v", from.Name, at, err)
	}
	r := <-got
	if r.err != nil || r.n != int64(size) || r.sum != sha256.Sum256(data) {
		t.Fatalf("%s -> %s: received %d of %d bytes (err %v), content intact: %v", from.Name, at, r.n, size, r.err, r.sum == sha256.Sum256(data))
	}
	t.Logf("%s -> %s: %d bytes intact in %v", from.Name, at, size, time.Since(start).Round(time.Millisecond))
}

// ipFragments is the number of IP fragments ns's kernel has received.
func ipFragments(t *testing.T, ns *netns.NS) int {
	t.Helper()
	out, err := ns.Run("cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "ReasmReqds" && i < len(f) {
				var n int
				fmt.Sscan(f[i], &n)
				return n
			}
		}
	}
	t.Fatalf("no Ip ReasmReqds in %s's /proc/net/snmp", ns.Name)
	return 0
}
