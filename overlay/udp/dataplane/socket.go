package dataplane

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"

	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/internal/nsutil"
)

// socketBuffer is the kernel buffer asked for each way. The default
// (~200 KB) holds a few GSO sends; a burst from a fast sender needs more
// while the receive loop is busy writing to the TUN. With UDP_GRO each
// queued buffer holds up to 64 datagrams and is charged as such: at 4 MB,
// 4 parallel TCP streams overflowed it (Udp RcvbufErrors, thousands of
// retransmits); 16 MB took both to zero. It is a limit, not an allocation.
const socketBuffer = 16 << 20

// socket is one UDP port's socket and what its kernel can do.
type socket struct {
	uc *net.UDPConn
	pc *ipv4.PacketConn // recvmmsg and sendmmsg
	// gso says UDP_SEGMENT sends work; it is cleared for good if the kernel
	// refuses one with EIO (a device without checksum offload on the path).
	gso atomic.Bool
	// gro says UDP_GRO is on: one datagram read may hold several
	// datagrams of one size, with their size in a control message.
	gro bool
}

// listen opens the UDP socket for port on every IPv4 address of ns's
// namespace (the current one when ns is closed). Binding to every address
// rather than the public IP keeps the socket working when that IP changes.
func listen(ns netns.NsHandle, port int) (*socket, error) {
	var uc *net.UDPConn
	err := nsutil.Do(ns, func() error {
		var err error
		uc, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on udp port %d: %w", port, err)
	}
	s := &socket{uc: uc, pc: ipv4.NewPacketConn(uc)}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("udp port %d: %w", port, err)
	}
	err = rc.Control(func(fd uintptr) {
		setBuffer(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
		setBuffer(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
		// Linux 4.18 and 5.0; without them every datagram is its own
		// buffer, which works, more slowly.
		if _, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
			s.gso.Store(true)
		}
		s.gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("udp port %d: socket options: %w", port, err)
	}
	return s, nil
}

// setBuffer asks for socketBuffer bytes, past the sysctl limit if allowed
// (CAP_NET_ADMIN, which felt has), else up to the limit.
func setBuffer(fd, force, plain int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, socketBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, socketBuffer)
	}
}

func (s *socket) close() error { return s.uc.Close() }

// isClosed reports the error a socket (net.ErrClosed) or TUN (os.ErrClosed,
// also when the device was deleted) returns once closed, which ends a loop
// rather than counting as a failure.
func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) }
