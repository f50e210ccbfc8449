package udp

import (
	"time"

	"golang.org/x/net/ipv4"
)

const (
	// headroom is kept in front of every packet handed to the TUN: the
	// library writes its 10-byte virtio header there.
	headroom = 16
	// rxBuffer holds the largest datagram, a UDP_GRO read included, and
	// is the room the TUN write needs to coalesce packets into one
	// super-packet in place.
	rxBuffer = headroom + 0xffff
	// rxBatch buffers make one receive batch: at most rxBatch datagrams
	// read, or packets written to the TUN, per system call.
	rxBatch = 80
	// groReads is how many datagrams one read takes when UDP_GRO may hand
	// over up to maxSegments packets in each. They are read into the last
	// groReads buffers and split into the first ones; rxBatch-groReads >=
	// maxSegments-1 makes any read fit once the buffers before it are
	// flushed to the TUN.
	groReads = 16
)

// receiver holds the receive loop's preallocated state.
type receiver struct {
	p     *port
	bufs  [][]byte // rxBatch buffers of rxBuffer bytes, never reallocated
	sizes []int    // packet size in bufs[i][headroom:]
	owner []int    // per packet, the index of its tunnel, or -1
	msgs  []ipv4.Message
	wl    [][]byte // the packets for one tunnel's TUN write
}

func newReceiver(p *port) *receiver {
	r := &receiver{
		p: p, bufs: make([][]byte, rxBatch), sizes: make([]int, rxBatch), owner: make([]int, rxBatch),
		msgs: make([]ipv4.Message, rxBatch), wl: make([][]byte, 0, rxBatch),
	}
	backing := make([]byte, rxBatch*rxBuffer)
	for i := range r.bufs {
		// Capped, so that coalescing in one buffer cannot run into the next.
		r.bufs[i] = backing[i*rxBuffer : (i+1)*rxBuffer : (i+1)*rxBuffer]
		r.msgs[i].Buffers = make([][]byte, 1)
		r.msgs[i].OOB = make([]byte, 64)
	}
	return r
}

// receiveLoop reads datagrams and delivers their packets until the socket
// is closed.
func (p *port) receiveLoop() {
	defer close(p.done)
	r := newReceiver(p)
	first := 0
	if p.sock.gro {
		first = rxBatch - groReads
	}
	failures := 0
	for {
		for i := first; i < rxBatch; i++ {
			r.msgs[i].Buffers[0] = r.bufs[i][headroom:]
			r.msgs[i].OOB = r.msgs[i].OOB[:cap(r.msgs[i].OOB)]
		}
		n, err := p.sock.pc.ReadBatch(r.msgs[first:], 0)
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
		r.split(first, n)
	}
}

// split lays the packets of the n datagrams read into bufs[first:] out as
// one packet per buffer from bufs[0], delivering whenever the next
// datagram's packets would overwrite a datagram not yet split.
func (r *receiver) split(first, n int) {
	w := 0 // packets laid out
	for j := range n {
		i := first + j
		m := &r.msgs[i]
		seg := m.N
		if r.p.sock.gro {
			if s := groSize(m.OOB[:m.NN]); s > 0 && s < m.N {
				seg = s
			}
		}
		if seg == 0 { // an empty datagram
			r.p.unclaimed.Add(1)
			continue
		}
		count := (m.N + seg - 1) / seg
		if w+count-1 > i {
			r.deliver(w)
			w = 0
		}
		if count-1 > i { // more packets than buffers: not from a felt peer
			r.p.unclaimed.Add(uint64(count))
			continue
		}
		data := r.bufs[i][headroom : headroom+m.N]
		for off := 0; off < m.N; off += seg {
			end := min(off+seg, m.N)
			if w != i || off != 0 {
				// The last packet of buffer i may be copied onto the start
				// of buffer i itself: copy moves overlapping bytes safely.
				copy(r.bufs[w][headroom:], data[off:end])
			}
			r.sizes[w] = end - off
			w++
		}
	}
	r.deliver(w)
}

// deliver writes the n packets in bufs to the TUNs of the networks they are
// addressed to, after checking each came from that network's pool.
func (r *receiver) deliver(n int) {
	if n == 0 {
		return
	}
	tunnels := *r.p.tunnels.Load()
	var unclaimed uint64
	for k := range n {
		r.owner[k] = -1
		src, dst, ok := ipv4Addrs(r.bufs[k][headroom : headroom+r.sizes[k]])
		if !ok {
			unclaimed++
			continue
		}
		claimed := false
		for ti, t := range tunnels {
			if !t.subnet.contains(dst) {
				continue
			}
			claimed = true
			// From this host's own subnet is a forgery; from outside the
			// pool would make the port a way into the containers.
			if t.pool.contains(src) && !t.subnet.contains(src) {
				r.owner[k] = ti
			} else {
				t.ctr.rxDropped.Add(1)
			}
			break
		}
		if !claimed {
			unclaimed++
		}
	}
	if unclaimed > 0 {
		r.p.unclaimed.Add(unclaimed)
	}
	for ti, t := range tunnels {
		r.wl = r.wl[:0]
		var bytes uint64
		for k := range n {
			if r.owner[k] == ti {
				// A fresh slice header each time: the TUN write lengthens
				// and swaps the ones it is given.
				r.wl = append(r.wl, r.bufs[k][:headroom+r.sizes[k]])
				bytes += uint64(r.sizes[k])
			}
		}
		if len(r.wl) == 0 {
			continue
		}
		if _, err := t.dev.Write(r.wl, headroom); err != nil {
			// Some packets may have gone in; the library does not say
			// which, so the batch counts as dropped.
			t.ctr.rxDropped.Add(uint64(len(r.wl)))
			if !isClosed(err) {
				t.log.Debug("udp tunnel: TUN write failed", "err", err)
			}
			continue
		}
		t.ctr.received(uint64(len(r.wl)), bytes)
	}
}
