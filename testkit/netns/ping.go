package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Ping sends one ICMP echo request from inside the namespace to dst (IPv4)
// and waits up to timeout for the matching reply. It is a real ping, done
// with a raw socket opened in the namespace, so tests do not depend on a
// ping binary being installed.
func (ns *NS) Ping(dst netip.Addr, timeout time.Duration) error {
	if !dst.Is4() {
		return fmt.Errorf("ping %s: IPv4 only", dst)
	}
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		return fmt.Errorf("netns %s: ping %s: socket: %w", ns.Name, dst, err)
	}
	defer unix.Close(fd)

	id := uint16(os.Getpid())
	seq := uint16(counter.Add(1))
	req := echoRequest(id, seq)
	to := &unix.SockaddrInet4{Addr: dst.As4()}
	if err := unix.Sendto(fd, req, 0, to); err != nil {
		return fmt.Errorf("netns %s: ping %s: send: %w", ns.Name, dst, err)
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("netns %s: ping %s: no reply within %s", ns.Name, dst, timeout)
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("netns %s: ping %s: timeout: %w", ns.Name, dst, err)
		}
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("netns %s: ping %s: receive: %w", ns.Name, dst, err)
		}
		if sa, ok := from.(*unix.SockaddrInet4); !ok || sa.Addr != dst.As4() {
			continue
		}
		if isEchoReply(buf[:n], id, seq) {
			return nil
		}
	}
}

// echoRequest builds an ICMP echo request with a checksum.
func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 8+32)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "felt testkit ping payload.......")
	binary.BigEndian.PutUint16(b[2:], checksum(b))
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

func checksum(b []byte) uint16 {
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
