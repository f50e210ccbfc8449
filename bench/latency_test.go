package bench

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/felt-net/felt/testkit/hosts"
)

const (
	pingPort      = "5202"
	pingWarmup    = 500
	pingRoundTrip = 5000
)

// rrLatency measures TCP request/response latency from clientNS to addr in
// serverNS: one connection, a 1-byte request answered by a 1-byte response,
// one at a time, as netperf's TCP_RR does. Both sockets are made inside
// their namespaces (a socket stays in the namespace it was created in), so
// the bytes cross the path under test though both ends are this process.
func rrLatency(s *scope, clientNS, serverNS string, addr netip.Addr) (Dist, error) {
	hostport := net.JoinHostPort(addr.String(), pingPort)
	var ln net.Listener
	if err := hosts.InNetNS(s, serverNS, func() (err error) { ln, err = net.Listen("tcp", hostport); return err }); err != nil {
		return Dist{}, fmt.Errorf("listen %s in %s: %w", hostport, serverNS, err)
	}
	defer ln.Close()
	go echo(ln)
	var conn net.Conn
	if err := hosts.InNetNS(s, clientNS, func() (err error) {
		conn, err = net.DialTimeout("tcp", hostport, 5*time.Second)
		return err
	}); err != nil {
		return Dist{}, fmt.Errorf("dial %s from %s: %w", hostport, clientNS, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute)) // a bound against a stalled path, not a target
	buf := []byte{'x'}
	rtts := make([]time.Duration, 0, pingRoundTrip)
	for i := range pingWarmup + pingRoundTrip {
		t0 := time.Now()
		if _, err := conn.Write(buf); err != nil {
			return Dist{}, fmt.Errorf("request %d to %s: %w", i, hostport, err)
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			return Dist{}, fmt.Errorf("response %d from %s: %w", i, hostport, err)
		}
		if i >= pingWarmup { // the first exchanges pay for cold caches and the scheduler waking up
			rtts = append(rtts, time.Since(t0))
		}
	}
	return distOf(rtts, "µs"), nil
}

// echo answers each byte of the first connection on ln with itself. A plain
// read/write loop rather than io.Copy, which would splice a socket to
// itself: not the path a request/response server takes.
func echo(ln net.Listener) {
	c, err := ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	buf := make([]byte, 1)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}
