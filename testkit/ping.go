package testkit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/internal/nsutil"
)

var pingSeq atomic.Uint32 // tells this process's concurrent pings apart

// Ping sends one ICMP echo request from inside the namespace ns to dst
// (IPv4) and waits up to wait for the matching reply; nil means it came.
// It is a real ping, with a raw socket opened in the namespace, so tests
// need no ping binary. A closed (zero) handle pings from the current
// namespace.
func Ping(ns netns.NsHandle, dst netip.Addr, wait time.Duration) error {
	if !dst.Is4() {
		return fmt.Errorf("ping %s: IPv4 only", dst)
	}
	var fd int
	err := nsutil.Do(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		return fmt.Errorf("ping %s: socket: %w", dst, err)
	}
	defer unix.Close(fd)

	id := uint16(os.Getpid())
	seq := uint16(pingSeq.Add(1))
	to := &unix.SockaddrInet4{Addr: dst.As4()}
	if err := unix.Sendto(fd, echoRequest(id, seq), 0, to); err != nil {
		return fmt.Errorf("ping %s: send: %w", dst, err)
	}
	deadline := time.Now().Add(wait)
	buf := make([]byte, 1500)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("ping %s: no reply within %s", dst, wait)
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("ping %s: timeout: %w", dst, err)
		}
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("ping %s: receive: %w", dst, err)
		}
		if sa, ok := from.(*unix.SockaddrInet4); !ok || sa.Addr != dst.As4() {
			continue
		}
		if isEchoReply(buf[:n], id, seq) {
			return nil
		}
	}
}

// PingTries pings up to tries times, each waiting up to wait, and returns
// nil at the first reply, else the last error: for paths that may drop a
// first packet (a neighbour being resolved).
func PingTries(ns netns.NsHandle, dst netip.Addr, tries int, wait time.Duration) error {
	var err error
	for range max(tries, 1) {
		if err = Ping(ns, dst, wait); err == nil {
			return nil
		}
	}
	return err
}

// PingFrom is PingTries from the namespace called name (as `ip netns`
// lists it).
func PingFrom(name string, dst netip.Addr, tries int, wait time.Duration) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("ping %s from netns %s: %w", dst, name, err)
	}
	defer ns.Close()
	if err := PingTries(ns, dst, tries, wait); err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	return nil
}

// echoRequest builds an ICMP echo request with a checksum.
func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 8+32)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "felt testkit ping payload.......")
	binary.BigEndian.PutUint16(b[2:], Checksum(b))
	return b
}

// isEchoReply reports whether pkt (an IPv4 packet, as raw sockets deliver
// it) is the echo reply to id/seq.
func isEchoReply(pkt []byte, id, seq uint16) bool {
	if len(pkt) < 20 {
		return false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if len(pkt) < ihl+8 {
		return false
	}
	icmp := pkt[ihl:]
	return icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id && binary.BigEndian.Uint16(icmp[6:]) == seq
}

// Checksum is the Internet checksum (RFC 1071), of IPv4 headers and ICMP.
func Checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = (sum & 0xffff) + sum>>16
	}
	return ^uint16(sum)
}
