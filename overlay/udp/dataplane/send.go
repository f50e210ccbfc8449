package dataplane

import (
	"errors"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

const (
	// maxReadErrors is how many failed TUN reads in a row end the send
	// loop. Single failures happen; an endless run means the device is
	// unusable, and ending lets the next Setup recreate it.
	maxReadErrors = 100
	// txBatch is the most packets read from the TUN before they are sent
	// with one sendmmsg. Each may be a 64 KB super-packet.
	txBatch = 16
	// txBuffer holds the vnet header and the largest IPv4 packet, plus a
	// byte: a read that fills the buffer may have been cut short.
	txBuffer = vnetHdrLen + 0xffff + 1
)

// sender holds the send loop's preallocated state: the TUN read buffers
// and the messages of one sendmmsg. A message carries one packet as it
// is, or consecutive chunks of one frame, each chunk as two iovecs (its
// header, then its part of the packet, which is never copied), sent as one
// UDP GSO send when the socket can.
type sender struct {
	t    *Tunnel
	sock *socket
	mtu  int // the largest datagram payload: the tunnel's MTU
	// chunk is the packet bytes in a chunk; perMsg the most chunks one
	// message holds (UDP_MAX_SEGMENTS, and 64 KB in all).
	chunk, perMsg int

	bufs  [][]byte // TUN read buffers, vnet header first
	sizes []int
	hdrs  []byte   // frame headers of the batch's chunks
	iov   [][]byte // what the messages send, in order
	msgs  []ipv4.Message
	oob   [][]byte // per message, room for a UDP_SEGMENT control message
	// Per message: where its iovecs start, its datagrams, the packets
	// whose last part it carries, and their bytes.
	start, segs, pkts, bytes []int
	m, nv, nh                int            // messages, iovecs and frame headers used in the batch
	single                   []ipv4.Message // for resending a refused GSO message datagram by datagram
}

func newSender(t *Tunnel) *sender {
	mtu := t.cfg.MTU
	chunk := mtu - frameHeaderLen
	perMsg := min(maxSegments, maxPayload/mtu)
	frameChunks := min(maxChunks, chunkCount(0xffff, chunk)) // the most a packet is cut into
	frameMsgs := (frameChunks + perMsg - 1) / perMsg
	s := &sender{
		t: t, sock: t.port.sock, mtu: mtu, chunk: chunk, perMsg: perMsg,
		bufs: make([][]byte, txBatch), sizes: make([]int, txBatch),
		hdrs:   make([]byte, txBatch*frameChunks*frameHeaderLen),
		iov:    make([][]byte, txBatch*2*frameChunks),
		msgs:   make([]ipv4.Message, txBatch*frameChunks), // one per chunk without GSO
		oob:    make([][]byte, txBatch*frameMsgs),
		start:  make([]int, txBatch*frameChunks),
		segs:   make([]int, txBatch*frameChunks),
		pkts:   make([]int, txBatch*frameChunks),
		bytes:  make([]int, txBatch*frameChunks),
		single: make([]ipv4.Message, perMsg),
	}
	backing := make([]byte, txBatch*txBuffer)
	for i := range s.bufs {
		s.bufs[i] = backing[i*txBuffer : (i+1)*txBuffer : (i+1)*txBuffer]
	}
	for i := range s.oob {
		s.oob[i] = make([]byte, gsoSpace)
	}
	return s
}

// sendLoop reads batches from the TUN and sends them until the TUN is
// closed: by Stop, or by the device being deleted.
func (t *Tunnel) sendLoop() {
	defer close(t.done)
	s := newSender(t)
	failures := 0
	for {
		n, err := t.dev.read(s.bufs, s.sizes)
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

// send sends the n packets in s.bufs, each to the peer holding its
// destination.
func (s *sender) send(n int) {
	tab := s.t.peers.Load()
	gso := s.sock.gso.Load()
	var dropped uint64
	s.m, s.nv, s.nh = 0, 0, 0
	for i := range n {
		if s.sizes[i] < vnetHdrLen || s.sizes[i] >= len(s.bufs[i]) {
			dropped++ // a runt, or cut short: never sent half
			continue
		}
		vh := parseVnetHdr(s.bufs[i])
		pkt := s.bufs[i][vnetHdrLen:s.sizes[i]]
		dst, ok := ipv4Dst(pkt)
		if !ok {
			dropped++ // the kernel sends some IPv6 to any device
			continue
		}
		d := tab.lookup(dst)
		if d == nil {
			dropped++
			continue
		}
		if !vh.pending() && len(pkt) <= s.mtu {
			s.open(d)
			s.iov[s.nv] = pkt
			s.nv++
			j := s.m - 1
			s.segs[j], s.pkts[j], s.bytes[j] = 1, 1, len(pkt)
			continue
		}
		flags, gsoSize, err := frameFlagsFor(vh, pkt)
		count := chunkCount(len(pkt), s.chunk)
		if err != nil || count > maxChunks {
			dropped++
			s.t.warnOnce.Do(func() {
				s.t.log.Warn("udp tunnel: dropping a packet felt cannot carry (logged once)", "err", err, "bytes", len(pkt))
			})
			continue
		}
		s.addFrame(d, pkt, count, flags, gsoSize, gso)
	}
	m := s.m
	for j := range m {
		end := s.nv
		if j+1 < m {
			end = s.start[j+1]
		}
		s.msgs[j].Buffers = s.iov[s.start[j]:end]
		s.msgs[j].OOB = nil
		if s.segs[j] > 1 {
			// Every datagram but the last is a full chunk: mtu bytes.
			s.msgs[j].OOB = putGSO(s.oob[j], uint16(s.mtu))
		}
	}
	sent, bytes, failed := s.write(s.msgs[:m])
	s.t.ctr.sent(sent, bytes, dropped+failed)
}

// open starts a message to d.
func (s *sender) open(d *peerDest) {
	s.msgs[s.m] = ipv4.Message{Addr: d.addr}
	s.start[s.m], s.segs[s.m], s.pkts[s.m], s.bytes[s.m] = s.nv, 0, 0, 0
	s.m++
}

// addFrame adds pkt to the batch as a frame to d: its count chunks, a
// header and a slice of pkt each, in messages of up to perMsg chunks (one
// each without GSO).
func (s *sender) addFrame(d *peerDest, pkt []byte, count int, flags uint8, gsoSize uint16, gso bool) {
	id := s.t.port.nextFrameID()
	for k := range count {
		if k%s.perMsg == 0 || !gso {
			s.open(d)
		}
		h := s.hdrs[s.nh*frameHeaderLen : (s.nh+1)*frameHeaderLen]
		s.nh++
		frameHeader{flags: flags, index: uint8(k), count: uint8(count), gsoSize: gsoSize, id: id}.put(h)
		body := pkt[k*s.chunk : min((k+1)*s.chunk, len(pkt))]
		s.iov[s.nv], s.iov[s.nv+1] = h, body
		s.nv += 2
		j := s.m - 1
		s.segs[j]++
		s.bytes[j] += len(body)
		if k == count-1 {
			s.pkts[j]++
		}
	}
}

// write sends msgs with sendmmsg and returns the packets and bytes sent and
// the sends that failed. sendmmsg stops at the first message that fails;
// that one is dropped (or resent without GSO) and the rest sent.
func (s *sender) write(msgs []ipv4.Message) (sent, bytes, failed uint64) {
	for off := 0; off < len(msgs); {
		n, err := s.sock.pc.WriteBatch(msgs[off:], 0)
		for j := off; j < off+n; j++ {
			sent += uint64(s.pkts[j])
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
			return sent, bytes, failed + uint64(len(msgs)-off)
		}
		if off >= len(msgs) {
			break
		}
		if s.segs[off] > 1 && gsoRefused(err) {
			if errors.Is(err, unix.EIO) && s.sock.gso.CompareAndSwap(true, false) {
				s.t.log.Warn("udp tunnel: the kernel refused a UDP GSO send (no checksum offload on the path?); sending datagrams one by one from now on", "err", err)
			}
			if s.writeEach(&msgs[off]) {
				sent += uint64(s.pkts[off])
				bytes += uint64(s.bytes[off])
			} else {
				failed++
			}
		} else {
			failed++
		}
		off++
	}
	return sent, bytes, failed
}

// writeEach resends a GSO message's chunks as one datagram each, and
// reports whether all went.
func (s *sender) writeEach(msg *ipv4.Message) bool {
	k := len(msg.Buffers) / 2
	for i := range k {
		s.single[i] = ipv4.Message{Buffers: msg.Buffers[2*i : 2*i+2], Addr: msg.Addr}
	}
	for off := 0; off < k; {
		n, err := s.sock.pc.WriteBatch(s.single[off:k], 0)
		off += n
		if err != nil || n == 0 {
			return false
		}
	}
	return true
}

// gsoRefused reports the errors a UDP GSO send gets that the same
// datagrams sent one by one may not: EIO when a device on the path lacks
// checksum offload, EINVAL or EMSGSIZE when a datagram exceeds the path
// MTU (sent alone, the kernel fragments it).
func gsoRefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EMSGSIZE)
}
