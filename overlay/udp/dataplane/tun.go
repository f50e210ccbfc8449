package dataplane

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/internal/nsutil"
)

// tunDevice is a TUN opened with IFF_VNET_HDR: every packet read or
// written is preceded by a virtio_net_hdr (vnet.go). It is felt's own
// rather than a library's because felt wants the super-packets whole
// (frame.go); wireguard-go's TUN, which felt used first, always splits
// them and re-coalesces what it writes.
type tunDevice struct {
	f      *os.File
	rc     syscall.RawConn
	tso    bool // TCPv4 super-packets are offered (TUN_F_TSO4)
	closed atomic.Bool
}

// minTSOMTU is the least MTU at which the TUN is offered TCP segmentation:
// a 64 KB super-packet must fit in maxChunks chunks of MTU-frameHeaderLen
// bytes. Below it the kernel segments before the TUN and only checksums
// stay pending, which frames of one or two chunks carry.
const minTSOMTU = frameHeaderLen + (0xffff+maxChunks-1)/maxChunks

// openTUN creates the TUN device name in ns's namespace (the current one
// when ns is closed). The device is not persistent: it disappears when the
// device is closed, or when felt dies, so a crash leaves nothing behind but
// routes, which Sync prunes. The kernel puts a TUN in the namespace of the
// thread that opens /dev/net/tun, hence nsutil.Do.
func openTUN(ns netns.NsHandle, name string, mtu int) (*tunDevice, error) {
	fd := -1
	offloads := unix.TUN_F_CSUM
	if mtu >= minTSOMTU {
		offloads |= unix.TUN_F_TSO4
	}
	err := nsutil.Do(ns, func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return fmt.Errorf("name %q: %w", name, err)
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return fmt.Errorf("create: %w", err)
		}
		// What the device claims to do in hardware: the kernel then hands
		// over checksums and TCP segmentation pending, in the vnet header.
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads); err != nil {
			return fmt.Errorf("offloads: %w", err)
		}
		return nil
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	// Non-blocking, so that the os.File uses the runtime's poller: reads
	// park the goroutine, not a thread, and Close wakes them.
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	return &tunDevice{f: f, rc: rc, tso: offloads&unix.TUN_F_TSO4 != 0}, nil
}

// read reads packets, vnet header first, into bufs until none is waiting or
// bufs are full, and returns how many it read, with their sizes in sizes.
// It waits for the first one. Once the device is closed, or deleted (the
// kernel then says EBADFD), it returns os.ErrClosed.
func (d *tunDevice) read(bufs [][]byte, sizes []int) (int, error) {
	n := 0
	var rerr error
	err := d.rc.Read(func(fd uintptr) bool {
		for n < len(bufs) {
			m, err := unix.Read(int(fd), bufs[n])
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return n > 0 // nothing (more) to read: wait, or hand over what came
			case err != nil:
				rerr = err
				return true
			}
			sizes[n] = m
			n++
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil && (d.closed.Load() || errors.Is(err, unix.EBADFD)) {
		err = os.ErrClosed
	}
	return n, err
}

// write writes one packet, vnet header first.
func (d *tunDevice) write(b []byte) error {
	_, err := d.f.Write(b)
	if err != nil && (d.closed.Load() || errors.Is(err, unix.EBADFD)) {
		return os.ErrClosed
	}
	return err
}

// close closes the device, which removes it, and wakes a blocked read.
func (d *tunDevice) close() error {
	d.closed.Store(true)
	return d.f.Close()
}
