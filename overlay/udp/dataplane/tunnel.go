package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Config describes one network's tunnel on this host.
type Config struct {
	Name   string       // the TUN device to create; it must not exist
	Port   int          // the UDP port, shared with other tunnels using it
	Pool   netip.Prefix // the network's pool: packets from peers must come from it
	Subnet netip.Prefix // this host's lease: packets from peers must go to it
	// MTU sizes the read buffers; the caller sets the device's MTU to it.
	MTU int
	// Counters, if set, are counted into (and may outlive the tunnel).
	Counters *Counters
}

// Tunnel is one network's TUN device and the loop sending what it reads.
type Tunnel struct {
	cfg    Config
	ps     *Ports
	port   *port
	dev    *tunDevice
	log    *slog.Logger
	pool   prefix4
	subnet prefix4
	ctr    *Counters
	peers  atomic.Pointer[peerTable]

	warnOnce sync.Once // for a packet the data path cannot carry

	stopOnce sync.Once
	stopErr  error
	done     chan struct{} // closed when the send loop has returned
}

// Start creates the TUN device cfg.Name, joins cfg.Port's socket (opening
// it if no other tunnel has) and starts forwarding in both directions.
// Until SetPeers, packets read from the TUN are dropped. The device is
// left down and without address: configuring it is the caller's.
func (ps *Ports) Start(cfg Config) (*Tunnel, error) {
	switch {
	case !cfg.Pool.IsValid() || !cfg.Pool.Addr().Is4():
		return nil, fmt.Errorf("tunnel %s: pool %s is not an IPv4 prefix", cfg.Name, cfg.Pool)
	case !cfg.Subnet.IsValid() || !cfg.Subnet.Addr().Is4():
		return nil, fmt.Errorf("tunnel %s: subnet %s is not an IPv4 prefix", cfg.Name, cfg.Subnet)
	case cfg.Port < 1 || cfg.Port > 0xffff:
		return nil, fmt.Errorf("tunnel %s: port %d is outside 1-65535", cfg.Name, cfg.Port)
	case cfg.MTU < 68 || cfg.MTU > maxPayload:
		return nil, fmt.Errorf("tunnel %s: MTU %d is outside 68-%d", cfg.Name, cfg.MTU, maxPayload)
	}
	if cfg.Counters == nil {
		cfg.Counters = &Counters{}
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p, err := ps.acquire(cfg.Port)
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: %w", cfg.Name, err)
	}
	dev, err := openTUN(ps.ns, cfg.Name, cfg.MTU)
	if err != nil {
		return nil, errors.Join(err, ps.release(p))
	}
	t := &Tunnel{
		cfg: cfg, ps: ps, port: p, dev: dev, log: ps.log.With("device", cfg.Name),
		pool: newPrefix4(cfg.Pool), subnet: newPrefix4(cfg.Subnet), ctr: cfg.Counters,
		done: make(chan struct{}),
	}
	t.peers.Store(&peerTable{})
	p.attach(t)
	go t.sendLoop()
	return t, nil
}

// SetPeers replaces the peers packets are sent to. Lock-free for the send
// loop: it reads the table once per batch.
func (t *Tunnel) SetPeers(peers []Peer) error {
	tab, err := newPeerTable(peers)
	if err != nil {
		return fmt.Errorf("tunnel %s: %w", t.cfg.Name, err)
	}
	t.peers.Store(tab)
	return nil
}

// Done is closed when the send loop has ended: after Stop, or when the TUN
// device went away (deleted by hand). A tunnel in that state forwards
// nothing and must be stopped and started again.
func (t *Tunnel) Done() <-chan struct{} { return t.done }

// Stop leaves the port (closing its socket if this was the last tunnel on
// it), closes the TUN device, which removes it and its routes, and waits
// for the send loop to end. Calling it again does nothing.
func (t *Tunnel) Stop() error {
	t.stopOnce.Do(func() {
		t.ps.mu.Lock()
		defer t.ps.mu.Unlock()
		t.port.detach(t)
		err := t.dev.close()
		<-t.done
		t.stopErr = errors.Join(err, t.ps.release(t.port))
		if t.stopErr != nil {
			t.stopErr = fmt.Errorf("tunnel %s: stop: %w", t.cfg.Name, t.stopErr)
		}
	})
	return t.stopErr
}

// Stats returns the tunnel's counters.
func (t *Tunnel) Stats() Stats {
	s := t.ctr.snapshot()
	s.Unclaimed = t.port.unclaimed.Load()
	s.Incomplete = t.port.incomplete.Load()
	return s
}

// Offloads says whether the batched paths are on: TCP super-packets
// from the TUN, UDP GSO sends and UDP GRO reads. For logs and tests.
func (t *Tunnel) Offloads() (tso, gso, gro bool) {
	return t.dev.tso, t.port.sock.gso.Load(), t.port.sock.gro
}
