package dataplane

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// tcpPacket returns an IPv4 packet of size bytes: a TCP header with a
// data offset of doff bytes, then payload.
func tcpPacket(size, doff int) []byte {
	p := make([]byte, size)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(size))
	p[9] = unix.IPPROTO_TCP
	copy(p[12:], []byte{10, 42, 2, 2})
	copy(p[16:], []byte{10, 42, 1, 2})
	p[20+12] = byte(doff/4) << 4
	for i := 20 + doff; i < size; i++ {
		p[i] = byte(i)
	}
	return p
}

func TestFrameHeaderWire(t *testing.T) {
	h := frameHeader{flags: frameCsum | frameTSO, index: 3, count: 45, gsoSize: 1432, id: 0xbeef}
	b := make([]byte, frameHeaderLen)
	h.put(b)
	// The wire format is what another felt reads: pin it.
	if want := []byte{0xf1, 0x03, 3, 45, 0x05, 0x98, 0xbe, 0xef}; !bytes.Equal(b, want) {
		t.Fatalf("header % x, want % x", b, want)
	}
	if got, ok := parseFrameHeader(b); !ok || got != h {
		t.Fatalf("parsed %+v %v, want %+v", got, ok, h)
	}
	if !isFrame(b) || isFrame(tcpPacket(40, 20)) || isFrame(nil) {
		t.Fatal("isFrame cannot tell a frame from an IPv4 packet")
	}
	for name, spoil := range map[string]func([]byte){
		"magic":         func(b []byte) { b[0] = 0xf2 },
		"unknown flag":  func(b []byte) { b[1] |= 0x80 },
		"index > count": func(b []byte) { b[2] = 45 },
		"no chunks":     func(b []byte) { b[2], b[3] = 0, 0 },
	} {
		c := append([]byte(nil), b...)
		spoil(c)
		if _, ok := parseFrameHeader(c); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, ok := parseFrameHeader(b[:7]); ok {
		t.Error("short header accepted")
	}
}

func TestFrameFlagsFor(t *testing.T) {
	tso := vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4 | unix.VIRTIO_NET_HDR_GSO_ECN,
		hdrLen: 52, gsoSize: 1420, csumStart: 20, csumOffset: 16}
	flags, gso, err := frameFlagsFor(tso, tcpPacket(30000, 32))
	if err != nil || flags != frameCsum|frameTSO|frameECN || gso != 1420 {
		t.Fatalf("TSO: flags %b gso %d err %v", flags, gso, err)
	}
	udp := tcpPacket(100, 20)
	udp[9] = unix.IPPROTO_UDP
	flags, gso, err = frameFlagsFor(vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 20, csumOffset: 6}, udp)
	if err != nil || flags != frameCsum || gso != 0 {
		t.Fatalf("UDP checksum: flags %b gso %d err %v", flags, gso, err)
	}
	if flags, _, err := frameFlagsFor(vnetHdr{}, udp); err != nil || flags != 0 {
		t.Fatalf("nothing pending: flags %b err %v", flags, err)
	}
	for name, c := range map[string]struct {
		vh  vnetHdr
		pkt []byte
	}{
		"IPv6":               {vnetHdr{}, append([]byte{0x60}, make([]byte, 39)...)},
		"checksum elsewhere": {vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 24, csumOffset: 16}, tcpPacket(100, 20)},
		"wrong offset":       {vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 20, csumOffset: 6}, tcpPacket(100, 20)},
		"TSO of UDP":         {vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1000, csumStart: 20, csumOffset: 6}, udp},
		"TSO without csum":   {vnetHdr{gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1000}, tcpPacket(3000, 20)},
		"UDP segmentation":   {vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: unix.VIRTIO_NET_HDR_GSO_UDP_L4, gsoSize: 1000, csumStart: 20, csumOffset: 6}, udp},
		"TCPv6 segmentation": {vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV6, gsoSize: 1000, csumStart: 20, csumOffset: 16}, tcpPacket(3000, 20)},
	} {
		if _, _, err := frameFlagsFor(c.vh, c.pkt); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestVnetFor(t *testing.T) {
	pkt := tcpPacket(30000, 32)
	vh, ok := vnetFor(frameCsum|frameTSO|frameECN, 1420, pkt)
	want := vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4 | unix.VIRTIO_NET_HDR_GSO_ECN,
		hdrLen: 52, gsoSize: 1420, csumStart: 20, csumOffset: 16}
	if !ok || vh != want {
		t.Fatalf("got %+v %v, want %+v", vh, ok, want)
	}
	// The header the sender read comes back as the same bytes.
	b := make([]byte, vnetHdrLen)
	vh.put(b)
	if parseVnetHdr(b) != want {
		t.Fatalf("vnet header round trip: %+v", parseVnetHdr(b))
	}
	if vh, ok := vnetFor(frameCsum, 0, tcpPacket(100, 20)); !ok || vh.csumStart != 20 || vh.csumOffset != 16 || vh.gsoType != 0 {
		t.Fatalf("checksum only: %+v %v", vh, ok)
	}
	udp := tcpPacket(100, 20)
	udp[9] = unix.IPPROTO_UDP
	icmp := tcpPacket(100, 20)
	icmp[9] = unix.IPPROTO_ICMP
	badOff := tcpPacket(100, 20)
	badOff[32] = 4 << 4 // a 16-byte TCP header
	for name, c := range map[string]struct {
		flags uint8
		gso   uint16
		pkt   []byte
	}{
		"unknown flag":      {0x80 | frameCsum, 0, tcpPacket(100, 20)},
		"TSO without csum":  {frameTSO, 1000, tcpPacket(3000, 20)},
		"TSO of UDP":        {frameCsum | frameTSO, 1000, udp},
		"TSO size 0":        {frameCsum | frameTSO, 0, tcpPacket(3000, 20)},
		"TSO bad offset":    {frameCsum | frameTSO, 1000, badOff},
		"TSO header cut":    {frameCsum | frameTSO, 1000, tcpPacket(3000, 60)[:60]},
		"checksum of ICMP":  {frameCsum, 0, icmp},
		"ECN without TSO":   {frameCsum | frameECN, 0, tcpPacket(100, 20)},
		"checksum past end": {frameCsum, 0, tcpPacket(100, 20)[:37]},
		"shorter than IPv4": {frameCsum, 0, tcpPacket(100, 20)[:19]},
	} {
		if _, ok := vnetFor(c.flags, c.gso, c.pkt); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

// chunks cuts pkt into a frame's chunks of at most size bytes.
func chunks(pkt []byte, size int, flags uint8, id uint16) (hs []frameHeader, bodies [][]byte) {
	n := chunkCount(len(pkt), size)
	for k := range n {
		hs = append(hs, frameHeader{flags: flags, index: uint8(k), count: uint8(n), id: id})
		bodies = append(bodies, pkt[k*size:min((k+1)*size, len(pkt))])
	}
	return hs, bodies
}

func TestAssembler(t *testing.T) {
	srcA := netip.MustParseAddrPort("192.168.1.2:8285")
	srcB := netip.MustParseAddrPort("192.168.1.3:8285")
	pkt1, pkt2 := tcpPacket(65535, 20), tcpPacket(5000, 20)
	pkt2[100] = 0xaa

	t.Run("in order", func(t *testing.T) {
		a := newAssembler()
		hs, bs := chunks(pkt1, 1464, frameCsum, 7)
		if len(hs) != 45 {
			t.Fatalf("%d chunks", len(hs))
		}
		for k := range hs {
			buf, done := a.add(srcA, hs[k], bs[k])
			if done != (k == len(hs)-1) {
				t.Fatalf("chunk %d: done %v", k, done)
			}
			if done && !bytes.Equal(buf[vnetHdrLen:], pkt1) {
				t.Fatal("joined packet differs")
			}
		}
		if a.incomplete != 0 {
			t.Fatalf("incomplete %d", a.incomplete)
		}
	})

	t.Run("interleaved senders and ids", func(t *testing.T) {
		a := newAssembler()
		h1, b1 := chunks(pkt1, 1464, 0, 1)
		h2, b2 := chunks(pkt2, 1464, 0, 1) // same id, other sender
		h3, b3 := chunks(pkt2, 1000, 0, 2) // same sender, other id
		got := map[string][]byte{}
		for k := range max(len(h1), len(h2), len(h3)) {
			for _, c := range []struct {
				name string
				src  netip.AddrPort
				hs   []frameHeader
				bs   [][]byte
			}{{"a1", srcA, h1, b1}, {"b1", srcB, h2, b2}, {"a2", srcA, h3, b3}} {
				if k < len(c.hs) {
					if buf, done := a.add(c.src, c.hs[k], c.bs[k]); done {
						got[c.name] = append([]byte(nil), buf[vnetHdrLen:]...)
					}
				}
			}
		}
		if !bytes.Equal(got["a1"], pkt1) || !bytes.Equal(got["b1"], pkt2) || !bytes.Equal(got["a2"], pkt2) || a.incomplete != 0 {
			t.Fatalf("joined %d %d %d bytes, incomplete %d", len(got["a1"]), len(got["b1"]), len(got["a2"]), a.incomplete)
		}
	})

	t.Run("lost and misordered chunks", func(t *testing.T) {
		a := newAssembler()
		hs, bs := chunks(pkt2, 1464, 0, 9)
		// The second chunk lost: the third does not complete a packet.
		a.add(srcA, hs[0], bs[0])
		if _, done := a.add(srcA, hs[2], bs[2]); done || a.incomplete != 1 {
			t.Fatalf("gap: done %v incomplete %d", done, a.incomplete)
		}
		// The first chunk lost: nothing joins, the frame's end is counted.
		for k := 1; k < len(hs); k++ {
			if _, done := a.add(srcA, hs[k], bs[k]); done {
				t.Fatal("frame without its first chunk completed")
			}
		}
		if a.incomplete != 2 {
			t.Fatalf("incomplete %d, want 2", a.incomplete)
		}
		// A chunk claiming another count than the first: abandoned.
		a.add(srcA, hs[0], bs[0])
		odd := hs[1]
		odd.count++
		if _, done := a.add(srcA, odd, bs[1]); done || a.incomplete != 3 {
			t.Fatalf("count changed: done %v incomplete %d", done, a.incomplete)
		}
		// And a frame after all that still joins.
		for k := range hs {
			if buf, done := a.add(srcA, hs[k], bs[k]); done && !bytes.Equal(buf[vnetHdrLen:], pkt2) {
				t.Fatal("joined packet differs")
			}
		}
	})

	t.Run("more than 64 KB", func(t *testing.T) {
		a := newAssembler()
		big := make([]byte, 0xffff+100)
		hs, bs := chunks(big, 1464, 0, 3)
		for k := range hs {
			if _, done := a.add(srcA, hs[k], bs[k]); done {
				t.Fatal("oversized frame completed")
			}
		}
	})

	t.Run("stale frames make room", func(t *testing.T) {
		a := newAssembler()
		hs, bs := chunks(pkt2, 1464, 0, 0)
		// More frames left half done than there are slots.
		for id := range uint16(maxAssemblies + 5) {
			h := hs[0]
			h.id = id
			a.add(srcA, h, bs[0])
		}
		if a.incomplete != 5 {
			t.Fatalf("incomplete %d, want 5 evicted", a.incomplete)
		}
		// The newest survive and complete; the oldest were taken.
		last := uint16(maxAssemblies + 4)
		for k := 1; k < len(hs); k++ {
			h := hs[k]
			h.id = last
			if buf, done := a.add(srcA, h, bs[k]); done && !bytes.Equal(buf[vnetHdrLen:], pkt2) {
				t.Fatal("joined packet differs")
			} else if done != (k == len(hs)-1) {
				t.Fatalf("chunk %d: done %v", k, done)
			}
		}
		h := hs[len(hs)-1]
		h.id = 0
		if _, done := a.add(srcA, h, bs[len(hs)-1]); done {
			t.Fatal("an evicted frame completed")
		}
	})
}

func TestMinTSOMTU(t *testing.T) {
	// At the least MTU offered TSO, the largest packet fits in a frame;
	// one byte less and it would not.
	if n := chunkCount(0xffff, minTSOMTU-frameHeaderLen); n > maxChunks {
		t.Fatalf("MTU %d: %d chunks", minTSOMTU, n)
	}
	if n := chunkCount(0xffff, minTSOMTU-1-frameHeaderLen); n <= maxChunks {
		t.Fatalf("MTU %d would do: %d chunks", minTSOMTU-1, n)
	}
}

// FuzzReceive feeds arbitrary datagrams from one peer through what the
// receive loop does before the TUN: frame header, reassembly, the IPv4
// check and the offloads handed to the kernel, which must always point
// inside the packet.
func FuzzReceive(f *testing.F) {
	pkt := tcpPacket(3000, 20)
	var seed []byte
	hs, bs := chunks(pkt, 1000, frameCsum|frameTSO, 1)
	for k := range hs {
		hs[k].gsoSize = 1400
		h := make([]byte, frameHeaderLen)
		hs[k].put(h)
		seed = append(append(seed, h...), bs[k]...)
	}
	f.Add(seed, uint16(1008))
	f.Add(tcpPacket(60, 20), uint16(60))
	src := netip.MustParseAddrPort("192.168.1.2:8285")
	f.Fuzz(func(t *testing.T, data []byte, size uint16) {
		if size < frameHeaderLen+1 {
			size = frameHeaderLen + 1
		}
		a := newAssembler()
		for off := 0; off < len(data); off += int(size) {
			d := data[off:min(off+int(size), len(data))]
			if !isFrame(d) {
				continue
			}
			h, ok := parseFrameHeader(d)
			if !ok {
				continue
			}
			p := d[frameHeaderLen:]
			if h.count > 1 {
				buf, done := a.add(src, h, p)
				if !done {
					continue
				}
				p = buf[vnetHdrLen:]
			}
			if _, _, ok := ipv4Addrs(p); !ok {
				continue
			}
			vh, ok := vnetFor(h.flags, h.gsoSize, p)
			if !ok {
				continue
			}
			if vh.flags != 0 && int(vh.csumStart)+int(vh.csumOffset)+2 > len(p) {
				t.Fatalf("checksum at %d+%d past a %d-byte packet", vh.csumStart, vh.csumOffset, len(p))
			}
			if vh.gsoType != 0 && (vh.gsoSize == 0 || int(vh.hdrLen) > len(p) || vh.flags == 0) {
				t.Fatalf("segmentation %+v of a %d-byte packet", vh, len(p))
			}
		}
	})
}
