package dataplane

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netns"
)

// Ports opens the UDP sockets of one network namespace and shares each
// port's among the tunnels using it. Several felt networks may keep the
// default port; the inner packet's destination says which network a
// datagram is for, since pools never overlap. Requiring distinct ports
// instead would make the default fail for the second network, on every
// host.
type Ports struct {
	ns  netns.NsHandle
	log *slog.Logger

	mu    sync.Mutex
	ports map[int]*port
}

// NewPorts returns the port set of ns's namespace (the current one when ns
// is closed, e.g. netns.None()). ns must stay open while tunnels start.
func NewPorts(ns netns.NsHandle, log *slog.Logger) *Ports {
	if log == nil {
		log = slog.Default()
	}
	return &Ports{ns: ns, log: log, ports: map[int]*port{}}
}

// port is one open socket, its receive loop and its users.
type port struct {
	num  int
	sock *socket
	log  *slog.Logger

	users int // tunnels holding the port; guarded by Ports.mu
	// tunnels is the receive loop's demultiplexing table, replaced whole
	// (under Ports.mu) when a tunnel joins or leaves.
	tunnels   atomic.Pointer[[]*Tunnel]
	unclaimed atomic.Uint64
	// incomplete counts frames abandoned with chunks missing.
	incomplete atomic.Uint64
	// frameIDs numbers the frames sent from the port, by every tunnel
	// using it: the receiver tells frames apart by sender and id, and two
	// tunnels' frames may interleave.
	frameIDs atomic.Uint32
	done     chan struct{} // closed when the receive loop has returned
}

// acquire returns port num, opening it and starting its receive loop on
// first use. The caller holds ps.mu.
func (ps *Ports) acquire(num int) (*port, error) {
	if p := ps.ports[num]; p != nil {
		p.users++
		return p, nil
	}
	sock, err := listen(ps.ns, num)
	if err != nil {
		return nil, err
	}
	p := &port{num: num, sock: sock, log: ps.log, users: 1, done: make(chan struct{})}
	p.tunnels.Store(&[]*Tunnel{})
	ps.ports[num] = p
	go p.receiveLoop()
	ps.log.Debug("udp port open", "port", num, "gso", sock.gso.Load(), "gro", sock.gro)
	return p, nil
}

// release drops one use of p; the last closes the socket and waits for the
// receive loop to end. The caller holds ps.mu.
func (ps *Ports) release(p *port) error {
	p.users--
	if p.users > 0 {
		return nil
	}
	delete(ps.ports, p.num)
	err := p.sock.close()
	<-p.done
	ps.log.Debug("udp port closed", "port", p.num)
	if err != nil {
		return fmt.Errorf("close udp port %d: %w", p.num, err)
	}
	return nil
}

func (p *port) nextFrameID() uint16 { return uint16(p.frameIDs.Add(1)) }

// attach and detach change the demultiplexing table; the caller holds
// ps.mu, so the copies never race.
func (p *port) attach(t *Tunnel) {
	next := append(slices.Clone(*p.tunnels.Load()), t)
	p.tunnels.Store(&next)
}

func (p *port) detach(t *Tunnel) {
	next := slices.DeleteFunc(slices.Clone(*p.tunnels.Load()), func(x *Tunnel) bool { return x == t })
	p.tunnels.Store(&next)
}
