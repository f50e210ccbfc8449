package wireguard

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/internal/nsutil"
)

// UAPIDir is where wireguard-go listens for wgctrl (and wg(8)): a socket
// <device>.sock per device. wgctrl and wireguard-go hard-code it, so two
// felts on one file system (tests' namespace hosts) need a private one
// each (a tmpfs on /run/wireguard).
const UAPIDir = "/var/run/wireguard"

// netlinkAddWireguard creates a kernel WireGuard device in the host's
// namespace (the netlink handle's).
func (b *Backend) netlinkAddWireguard(name string, mtu int) error {
	return b.cfg.Netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}})
}

// kernelUnsupported says whether err, from creating a kernel WireGuard
// device, means this kernel has no WireGuard (no module, or one that cannot
// be loaded from here) rather than a failure worth reporting: the kernel
// answers EOPNOTSUPP for a link kind it does not know.
func kernelUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENODEV) ||
		errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT)
}

// choose decides the implementation for a new device from the mode and
// what creating a kernel device answered (kernelErr; nil: it worked). It
// returns the error to report when there is none to use.
func choose(mode string, kernelErr error) (string, error) {
	switch {
	case mode == ModeUserspace:
		return ImplUserspace, nil
	case kernelErr == nil:
		return ImplKernel, nil
	case mode == ModeKernel && kernelUnsupported(kernelErr):
		return "", fmt.Errorf("FELT_WIREGUARD=kernel, but this kernel has no WireGuard (%w): load the wireguard module, or set FELT_WIREGUARD=auto to use wireguard-go in user space", kernelErr)
	case mode == ModeAuto && kernelUnsupported(kernelErr):
		return ImplUserspace, nil
	default:
		return "", fmt.Errorf("create kernel WireGuard device: %w", kernelErr)
	}
}

// userDevice is a running wireguard-go device: its TUN, the device, and
// the UAPI listener wgctrl configures it through.
type userDevice struct {
	name     string
	dev      *device.Device
	uapi     net.Listener
	accepted chan struct{} // closed when the UAPI accept loop ends
}

// startUserspace creates the TUN device name in ns (with offloads: TSO and
// UDP GSO in, GRO out, wireguard-go's default batch sizes) and runs
// wireguard-go on it with the standard bind (UDP GSO/GRO), reachable by
// wgctrl through its UAPI socket.
//
// The device gets key and port before it can go up: a TUN reports itself
// up at once (wireguard-go's write probe answers "up" for a TUN that is
// still down), and a device up without them binds a random port, to
// rebind on felt's a moment later; a peer's handshake in between met a
// closed port. So the TUN's events reach wireguard-go only once key and
// port are set (gatedTUN), and its one bind is on the port.
func startUserspace(ns netns.NsHandle, name string, mtu int, key wgtypes.Key, port int, log *slog.Logger) (*userDevice, error) {
	var td tun.Device
	err := nsutil.Do(ns, func() error {
		var err error
		td, err = tun.CreateTUN(name, mtu)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	var bind conn.Bind = conn.NewDefaultBind()
	if ns.IsOpen() {
		bind = &nsBind{Bind: bind, ns: ns}
	}
	gated := gateEvents(td)
	dev := device.NewDevice(gated, bind, deviceLogger(log, name))
	err = dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(key[:]), port))
	gated.release()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("wireguard-go %s: key and port %d: %w", name, port, err)
	}
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("uapi socket %s: %w", uapiPath(name), err)
	}
	l, err := ipc.UAPIListen(name, f)
	f.Close() // the listener holds its own copy
	if err != nil {
		dev.Close()
		os.Remove(uapiPath(name))
		return nil, fmt.Errorf("uapi socket %s: %w", uapiPath(name), err)
	}
	u := &userDevice{name: name, dev: dev, uapi: l, accepted: make(chan struct{})}
	go u.serve(log)
	return u, nil
}

// gatedTUN holds a TUN's events (up, down, MTU) back from wireguard-go
// until released, then passes them on, and ends with the TUN's.
type gatedTUN struct {
	tun.Device
	events  chan tun.Event
	open    chan struct{}
	release func()
}

func gateEvents(td tun.Device) *gatedTUN {
	g := &gatedTUN{Device: td, events: make(chan tun.Event, 1), open: make(chan struct{})}
	g.release = sync.OnceFunc(func() { close(g.open) })
	go func() {
		defer close(g.events)
		<-g.open
		for e := range td.Events() {
			g.events <- e
		}
	}()
	return g
}

func (g *gatedTUN) Events() <-chan tun.Event { return g.events }

// serve hands each UAPI connection (wgctrl's) to the device, until the
// listener is closed or its socket file deleted.
func (u *userDevice) serve(log *slog.Logger) {
	defer close(u.accepted)
	for {
		c, err := u.uapi.Accept()
		if err != nil {
			log.Debug("wireguard: uapi listener ended", "device", u.name, "err", err)
			return
		}
		go u.dev.IpcHandle(c)
	}
}

// stopped says why u cannot serve any more, or "".
func (u *userDevice) stopped() string {
	select {
	case <-u.dev.Wait():
		return "the wireguard-go device stopped (TUN device deleted?)"
	case <-u.accepted:
		return "its UAPI socket " + uapiPath(u.name) + " is gone"
	default:
		return ""
	}
}

// close stops u: its UAPI listener (which removes the socket file), the
// device, its TUN (taking its routes along) and its sockets.
func (u *userDevice) close() {
	u.uapi.Close()
	u.dev.Close()
	<-u.accepted
}

func uapiPath(name string) string { return filepath.Join(UAPIDir, name+".sock") }

// nsBind opens wireguard-go's sockets in a network namespace other than
// felt's (tests' namespace hosts): a socket belongs to the namespace of
// the thread creating it. Felt's own namespace uses the bare bind, which
// keeps wireguard-go's sticky-socket route listener.
type nsBind struct {
	conn.Bind
	ns netns.NsHandle
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = nsutil.Do(b.ns, func() error {
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	return fns, actual, err
}

// deviceLogger sends wireguard-go's log to felt's: its chatter at debug
// (formatted only when debug is on), its errors as warnings.
func deviceLogger(log *slog.Logger, name string) *device.Logger {
	log = log.With("device", name)
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug("wireguard-go: " + fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) {
			log.Warn("wireguard-go: " + fmt.Sprintf(format, args...))
		},
	}
}

// withClient runs f with a wgctrl client made in the host's namespace: its
// generic netlink socket (kernel devices) answers for the namespace it
// was opened in. One per call, so that no socket outlives the work and
// pins a test's namespace.
func (b *Backend) withClient(f func(c *wgctrl.Client) error) error {
	var c *wgctrl.Client
	err := nsutil.Do(b.ns, func() error {
		var err error
		c, err = wgctrl.New()
		return err
	})
	if err != nil {
		return fmt.Errorf("wgctrl: %w", err)
	}
	defer c.Close()
	return f(c)
}
