package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// ErrTooBig is returned (wrapped) when the kernel refuses to send an echo
// with don't-fragment set because it exceeds the MTU of the route to the
// peer: the device's, or a path MTU learnt from an ICMP "fragmentation
// needed".
var ErrTooBig = errors.New("larger than the path MTU")

// ICMP is the real Pinger: a privileged raw ICMP socket (the plugin has
// CAP_NET_RAW) per echo, bound to the source address so that the kernel
// sends it from this host's gateway and delivers only replies addressed
// to it. A socket per echo keeps concurrent probes apart without a
// demultiplexer; the rate is capped by the Prober, so this costs little.
type ICMP struct {
	id  int
	seq atomic.Uint32
}

// NewICMP returns an ICMP pinger whose echo identifier is this process's.
func NewICMP() *ICMP { return &ICMP{id: os.Getpid() & 0xffff} }

// payloadMark starts every echo's data, so a reply is ours beyond id/seq.
var payloadMark = []byte("felt probe ")

// Ping implements Pinger.
func (p *ICMP) Ping(ctx context.Context, src, dst netip.Addr, size int, wait time.Duration) (time.Duration, error) {
	if !src.Is4() || !dst.Is4() {
		return 0, fmt.Errorf("echo %s -> %s: IPv4 only", src, dst)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			// Don't fragment, and never fall back to fragmenting: a
			// full-size echo must fail where the path cannot carry it.
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "ip4:icmp", src.String())
	if err != nil {
		return 0, fmt.Errorf("echo from %s: %w", src, err)
	}
	defer pc.Close()
	seq := int(p.seq.Add(1) & 0xffff)
	data := make([]byte, max(size, len(payloadMark)))
	copy(data, payloadMark)
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: data}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = pc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = pc.SetDeadline(time.Now()) })
	defer stop()
	start := time.Now()
	if _, err := pc.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		if errors.Is(err, unix.EMSGSIZE) {
			return 0, fmt.Errorf("echo of %d bytes to %s: %w", size, dst, ErrTooBig)
		}
		return 0, fmt.Errorf("echo to %s: %w", dst, err)
	}
	buf := make([]byte, len(b)+128)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, fmt.Errorf("no reply from %s within %s", dst, wait)
			}
			return 0, fmt.Errorf("echo to %s: %w", dst, err)
		}
		rtt := time.Since(start)
		if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(dst.AsSlice()) {
			continue
		}
		m, err := icmp.ParseMessage(1, buf[:n]) // 1: ICMP for IPv4
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == p.id && e.Seq == seq && bytes.HasPrefix(e.Data, payloadMark) {
			return rtt, nil
		}
	}
}
