package udp

import (
	"fmt"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/felt-net/felt/internal/nsutil"
)

// openTUN creates the TUN device name in ns's namespace (the current one
// when ns is closed) and returns it. The device is not persistent: it
// disappears when the device is closed, or when felt dies, so a crash
// leaves nothing behind but routes, which Sync prunes.
//
// The device is created here rather than by tun.CreateTUN because the
// kernel puts a TUN in the namespace of the thread that opens
// /dev/net/tun, and because CreateTUN also starts event goroutines felt has
// no use for. IFF_VNET_HDR makes the library turn on TSO and checksum
// offload (TUNSETOFFLOAD) and split and coalesce super-packets.
func openTUN(ns netns.NsHandle, name string) (tun.Device, error) {
	fd := -1
	err := nsutil.Do(ns, func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
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
		return nil
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	// On failure the library has already wrapped fd in an os.File, whose
	// finalizer closes it; closing it here as well could close a reused fd.
	dev, _, err := tun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	return dev, nil
}
