package dataplane

import (
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"
)

const (
	// headroom is kept in front of every datagram read: the vnet header
	// is written there before the packet goes to the TUN.
	headroom = 16
	// rxBuffer holds the largest datagram, a UDP_GRO read included.
	rxBuffer = headroom + 0xffff
	// rxBatch is the most datagrams (or UDP_GRO runs of them) one
	// recvmmsg reads.
	rxBatch = 16
)

// receiver holds the receive loop's preallocated state.
type receiver struct {
	p    *port
	bufs [][]byte // rxBatch buffers of rxBuffer bytes
	msgs []ipv4.Message
	asm  *assembler
	// unclaimed counts the datagrams of the batch no tunnel took.
	unclaimed uint64
}

func newReceiver(p *port) *receiver {
	r := &receiver{p: p, bufs: make([][]byte, rxBatch), msgs: make([]ipv4.Message, rxBatch), asm: newAssembler()}
	backing := make([]byte, rxBatch*rxBuffer)
	for i := range r.bufs {
		r.bufs[i] = backing[i*rxBuffer : (i+1)*rxBuffer : (i+1)*rxBuffer]
		r.msgs[i].Buffers = [][]byte{r.bufs[i][headroom:]}
		r.msgs[i].OOB = make([]byte, 64)
	}
	return r
}

// receiveLoop reads datagrams and delivers their packets until the socket
// is closed.
func (p *port) receiveLoop() {
	defer close(p.done)
	r := newReceiver(p)
	failures := 0
	for {
		for i := range r.msgs {
			r.msgs[i].OOB = r.msgs[i].OOB[:cap(r.msgs[i].OOB)]
		}
		n, err := p.sock.pc.ReadBatch(r.msgs, 0)
		if err != nil {
			if isClosed(err) {
				return
			}
			// Errors queued on the socket (ICMP) and the like: note, go on.
			if failures++; failures == 1 || failures%1000 == 0 {
				p.log.Warn("udp port: receive failed", "port", p.num, "err", err, "inARow", failures)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		failures = 0
		for i := range n {
			r.read(i)
		}
		if r.unclaimed > 0 {
			p.unclaimed.Add(r.unclaimed)
			r.unclaimed = 0
		}
		if r.asm.incomplete > 0 {
			p.incomplete.Add(r.asm.incomplete)
			r.asm.incomplete = 0
		}
	}
}

// read handles the datagrams of message i: one, or with UDP_GRO a run of
// them from one sender, all of one size but the last.
func (r *receiver) read(i int) {
	m := &r.msgs[i]
	seg := m.N
	if r.p.sock.gro {
		if s := groSize(m.OOB[:m.NN]); s > 0 && s < m.N {
			seg = s
		}
	}
	if seg == 0 { // an empty datagram
		r.unclaimed++
		return
	}
	ua, _ := m.Addr.(*net.UDPAddr)
	if ua == nil {
		r.unclaimed++
		return
	}
	src := ua.AddrPort()
	buf := r.bufs[i]
	for off := headroom; off < headroom+m.N; off += seg {
		end := min(off+seg, headroom+m.N)
		// Each datagram is done with before the next: whatever is
		// written in front of the next one only overwrites this one.
		r.datagram(src, buf, off, end)
	}
}

// datagram handles buf[start:end], one datagram from src: an IPv4 packet,
// or a chunk of a frame. Up to vnetHdrLen bytes in front of start are free.
func (r *receiver) datagram(src netip.AddrPort, buf []byte, start, end int) {
	d := buf[start:end]
	if !isFrame(d) {
		r.deliver(buf, start, end, 0, 0)
		return
	}
	h, ok := parseFrameHeader(d)
	if !ok {
		r.unclaimed++
		return
	}
	if h.count == 1 {
		r.deliver(buf, start+frameHeaderLen, end, h.flags, h.gsoSize)
		return
	}
	if pkt, done := r.asm.add(src, h, d[frameHeaderLen:]); done {
		r.deliver(pkt, vnetHdrLen, len(pkt), h.flags, h.gsoSize)
	}
}

// deliver writes the packet buf[start:end] to the TUN of the network it is
// addressed to, after checking it came from that network's pool, with the
// offloads flags (frame.go) pending. The vnet header goes in front of start.
func (r *receiver) deliver(buf []byte, start, end int, flags uint8, gsoSize uint16) {
	pkt := buf[start:end]
	src, dst, ok := ipv4Addrs(pkt)
	if !ok {
		r.unclaimed++
		return
	}
	var t *Tunnel
	for _, c := range *r.p.tunnels.Load() {
		if c.subnet.contains(dst) {
			t = c
			break
		}
	}
	if t == nil {
		r.unclaimed++
		return
	}
	// From this host's own subnet is a forgery; from outside the pool
	// would make the port a way into the containers.
	if !t.pool.contains(src) || t.subnet.contains(src) {
		t.ctr.rxDropped.Add(1)
		return
	}
	var vh vnetHdr
	if flags != 0 {
		if vh, ok = vnetFor(flags, gsoSize, pkt); !ok {
			t.ctr.rxDropped.Add(1)
			return
		}
	}
	vh.put(buf[start-vnetHdrLen : start])
	if err := t.dev.write(buf[start-vnetHdrLen : end]); err != nil {
		t.ctr.rxDropped.Add(1)
		if !isClosed(err) {
			t.log.Debug("udp tunnel: TUN write failed", "err", err)
		}
		return
	}
	t.ctr.received(1, uint64(len(pkt)))
}
