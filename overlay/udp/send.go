package udp

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// maxReadErrors is how many failed TUN reads in a row end the send loop.
// Single failures happen (a malformed super-packet); an endless run means
// the device is unusable, and ending lets the next Setup recreate it.
const maxReadErrors = 100

// sender holds the send loop's preallocated state: the TUN read buffers
// and the messages of one sendmmsg. A message carries one packet, or, with
// GSO, several consecutive packets to one peer as one iovec each.
type sender struct {
	t    *Tunnel
	sock *socket

	bufs  [][]byte // TUN read buffers, one packet each
	sizes []int
	iov   [][]byte // the packets being sent, in order; messages slice it
	msgs  []ipv4.Message
	oob   [][]byte // per message, room for a UDP_SEGMENT control message
	// Per message: packets, bytes, GSO segment size, and whether a packet
	// shorter than the segment size ended it (only the last may be short).
	segs, bytes, segSize []int
	ended                []bool
	single               []ipv4.Message // for resending a refused GSO message packet by packet
}

func newSender(t *Tunnel) *sender {
	n := t.dev.BatchSize() // 128 with the vnet header: the most packets one read can split into
	// A packet read from the TUN is at most its MTU, split segments
	// included; MTU-sized buffers keep the set small (~190 KB at 1472).
	// read copes with an MTU raised behind felt's back.
	size := t.cfg.MTU
	backing := make([]byte, n*size)
	s := &sender{
		t: t, sock: t.port.sock,
		bufs: make([][]byte, n), sizes: make([]int, n), iov: make([][]byte, n),
		msgs: make([]ipv4.Message, n), oob: make([][]byte, n),
		segs: make([]int, n), bytes: make([]int, n), segSize: make([]int, n), ended: make([]bool, n),
		single: make([]ipv4.Message, maxSegments),
	}
	for i := range n {
		s.bufs[i] = backing[i*size : (i+1)*size : (i+1)*size]
		s.oob[i] = make([]byte, gsoSpace)
	}
	for i := range s.single {
		s.single[i].Buffers = make([][]byte, 1)
	}
	return s
}

// sendLoop reads batches from the TUN and sends them until the TUN is
// closed: by Stop, or by the device being deleted (the read then fails with
// EBADFD, which the library reports as closed).
func (t *Tunnel) sendLoop() {
	defer close(t.done)
	s := newSender(t)
	failures := 0
	for {
		n, err := s.read()
		if n > 0 {
			s.send(n)
		}
		if err == nil {
			failures = 0
			continue
		}
		if isClosed(err) {
			t.log.Debug("udp send loop ends: TUN closed")
			return
		}
		t.ctr.sent(0, 0, 1)
		if failures++; failures == 1 || failures >= maxReadErrors {
			t.log.Warn("udp tunnel: TUN read failed", "err", err, "inARow", failures)
		}
		if failures >= maxReadErrors {
			return
		}
		time.Sleep(time.Millisecond) // no busy loop on a persistent error
	}
}

// read reads a batch from the TUN, turning a panic into an error. The
// library assumes 64 KB buffers and slices past smaller ones when a
// super-packet's segments exceed them; that only happens if someone raised
// the TUN's MTU by hand above the MTU the buffers are sized for. Until Setup
// lowers it again, such reads are dropped, not the process.
func (s *sender) read() (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("%v (TUN MTU raised above %d?)", r, s.t.cfg.MTU)
		}
	}()
	return s.t.dev.Read(s.bufs, s.sizes, 0)
}

// send sends the n packets in s.bufs, each to the peer holding its
// destination, coalescing runs for UDP GSO.
func (s *sender) send(n int) {
	tab := s.t.peers.Load()
	gso := s.sock.gso.Load()
	var dropped uint64
	m, nv := 0, 0 // messages and iovecs used
	var last *peerDest
	for i := range n {
		if s.sizes[i] > len(s.bufs[i]) { // cannot happen with a sane MTU; never slice past the buffer
			dropped++
			continue
		}
		pkt := s.bufs[i][:s.sizes[i]]
		dst, ok := ipv4Dst(pkt)
		if !ok {
			dropped++
			continue
		}
		d := last
		if d == nil || !d.subnet.contains(dst) {
			if d = tab.lookup(dst); d == nil {
				dropped++
				continue
			}
		}
		s.iov[nv] = pkt
		nv++
		if m > 0 && gso && d == last && s.fits(m-1, len(pkt)) {
			j := m - 1
			s.msgs[j].Buffers = s.msgs[j].Buffers[:len(s.msgs[j].Buffers)+1]
			s.segs[j]++
			s.bytes[j] += len(pkt)
			s.ended[j] = len(pkt) < s.segSize[j]
			continue
		}
		s.msgs[m] = ipv4.Message{Buffers: s.iov[nv-1 : nv], Addr: d.addr}
		s.segs[m], s.bytes[m], s.segSize[m], s.ended[m] = 1, len(pkt), len(pkt), false
		m++
		last = d
	}
	for j := range m {
		if s.segs[j] > 1 {
			s.msgs[j].OOB = putGSO(s.oob[j], uint16(s.segSize[j]))
		}
	}
	sent, bytes, failed := s.write(s.msgs[:m])
	s.t.ctr.sent(sent, bytes, dropped+failed)
}

// fits reports whether a packet of size bytes may join message j's GSO
// send: all segments but the last have the first one's size, and the
// kernel takes at most maxSegments and maxPayload bytes.
func (s *sender) fits(j, size int) bool {
	return !s.ended[j] && size <= s.segSize[j] && s.segs[j] < maxSegments && s.bytes[j]+size <= maxPayload
}

// write sends msgs with sendmmsg and returns the packets and bytes sent and
// the packets dropped. sendmmsg stops at the first message that fails;
// that one is dropped (or resent without GSO) and the rest sent.
func (s *sender) write(msgs []ipv4.Message) (sent, bytes, dropped uint64) {
	for off := 0; off < len(msgs); {
		n, err := s.sock.pc.WriteBatch(msgs[off:], 0)
		for j := off; j < off+n; j++ {
			sent += uint64(s.segs[j])
			bytes += uint64(s.bytes[j])
		}
		off += n
		if err == nil {
			if n == 0 {
				break // no progress and no error: do not spin
			}
			continue
		}
		if isClosed(err) {
			for j := off; j < len(msgs); j++ {
				dropped += uint64(s.segs[j])
			}
			return sent, bytes, dropped
		}
		if off >= len(msgs) {
			break
		}
		if s.segs[off] > 1 && gsoRefused(err) {
			if errors.Is(err, unix.EIO) && s.sock.gso.CompareAndSwap(true, false) {
				s.t.log.Warn("udp tunnel: the kernel refused a UDP GSO send (no checksum offload on the path?); sending datagrams one by one from now on", "err", err)
			}
			p, b, d := s.writeEach(&msgs[off])
			sent, bytes, dropped = sent+p, bytes+b, dropped+d
		} else {
			dropped += uint64(s.segs[off])
		}
		off++
	}
	return sent, bytes, dropped
}

// writeEach resends a GSO message's packets as one datagram each.
func (s *sender) writeEach(msg *ipv4.Message) (sent, bytes, dropped uint64) {
	k := len(msg.Buffers)
	for i, pkt := range msg.Buffers {
		s.single[i].Buffers[0] = pkt
		s.single[i].Addr = msg.Addr
		s.single[i].OOB = nil
	}
	for off := 0; off < k; {
		n, err := s.sock.pc.WriteBatch(s.single[off:k], 0)
		for _, m := range s.single[off : off+n] {
			sent++
			bytes += uint64(len(m.Buffers[0]))
		}
		off += n
		if err != nil {
			dropped++
			off++
		} else if n == 0 {
			break
		}
	}
	return sent, bytes, dropped
}

// gsoRefused reports the errors a UDP GSO send gets that the same packets
// sent one by one may not: EIO when a device on the path lacks checksum
// offload, EINVAL or EMSGSIZE when a segment exceeds the path MTU (sent
// alone, the kernel fragments it).
func gsoRefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EMSGSIZE)
}
