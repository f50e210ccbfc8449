package dataplane

import "net/netip"

// maxAssemblies is how many frames one port joins at once. A frame's
// chunks arrive together, so more than one per sending tunnel is rare;
// the slots left by frames that lost a chunk are taken back oldest first.
const maxAssemblies = 32

// assembly is one frame being joined.
type assembly struct {
	src     netip.AddrPort
	id      uint16
	count   uint8
	next    uint8 // the chunk index expected next
	flags   uint8
	gsoSize uint16
	n       int    // packet bytes gathered, after vnetHdrLen bytes of room
	buf     []byte // vnetHdrLen + 0xffff bytes, allocated on first use
	started uint64 // assembler clock when the frame's first chunk came
	busy    bool
}

// assembler joins the chunks of frames, per port, in the receive loop. It
// expects each frame's chunks in order, as one sender's datagrams on one
// path arrive; a frame that misses or misorders a chunk is abandoned, its
// packet lost like any other, for TCP to resend.
type assembler struct {
	slots      []assembly
	clock      uint64
	incomplete uint64 // frames abandoned since the caller last took the count
}

func newAssembler() *assembler { return &assembler{slots: make([]assembly, maxAssemblies)} }

// add takes a chunk of a frame of more than one chunk from src, with its
// header h and body. When the chunk completes its frame, add returns the
// packet in a buffer with vnetHdrLen bytes of room in front, valid until
// the next call.
func (a *assembler) add(src netip.AddrPort, h frameHeader, body []byte) (buf []byte, done bool) {
	s := a.find(src, h.id)
	if h.index == 0 {
		if s != nil {
			a.abandon(s) // a frame id reused before its frame completed
		}
		s = a.take()
		s.src, s.id, s.count, s.next, s.flags, s.gsoSize, s.n = src, h.id, h.count, 0, h.flags, h.gsoSize, 0
		a.clock++
		s.started, s.busy = a.clock, true
	}
	if s == nil {
		if h.index == h.count-1 {
			a.incomplete++ // the end of a frame whose start never came
		}
		return nil, false
	}
	if h.index != s.next || h.count != s.count || h.flags != s.flags || h.gsoSize != s.gsoSize ||
		s.n+len(body) > len(s.buf)-vnetHdrLen {
		a.abandon(s)
		return nil, false
	}
	copy(s.buf[vnetHdrLen+s.n:], body)
	s.n += len(body)
	s.next++
	if s.next < s.count {
		return nil, false
	}
	s.busy = false
	return s.buf[:vnetHdrLen+s.n], true
}

// find returns the busy slot joining frame id from src, or nil.
func (a *assembler) find(src netip.AddrPort, id uint16) *assembly {
	for i := range a.slots {
		if s := &a.slots[i]; s.busy && s.id == id && s.src == src {
			return s
		}
	}
	return nil
}

// take returns a free slot, or frees the one whose frame started first.
func (a *assembler) take() *assembly {
	var oldest *assembly
	for i := range a.slots {
		s := &a.slots[i]
		if !s.busy {
			if s.buf == nil {
				s.buf = make([]byte, vnetHdrLen+0xffff)
			}
			return s
		}
		if oldest == nil || s.started < oldest.started {
			oldest = s
		}
	}
	a.abandon(oldest)
	return oldest
}

func (a *assembler) abandon(s *assembly) {
	s.busy = false
	a.incomplete++
}
