package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// A packet read from the TUN whose offloads are still pending (a TCP
// super-packet of up to 64 KB, or a packet whose transport checksum was
// left to the device) travels as a frame: the packet, untouched, cut into
// chunks that each fill one datagram, each chunk behind a frameHeader. The
// receiving host joins the chunks and writes the packet to its TUN with the
// same offloads pending, so its kernel carries the super-packet to the
// container whole and nobody computes a checksum: the container's TCP
// accepts a packet whose checksum was left to a device, as it does on veth.
//
// Cutting the super-packet into TCP segments in user space instead (what
// wireguard-go's TUN does) costs a checksum over every byte on each side,
// plus re-coalescing on the receiver: measured, that was a sixth of
// felt's CPU time and kept the backend under its throughput goal.
//
// Every other packet (ICMP, or a checksum already complete) goes as it
// is, one IPv4 packet per datagram, as in flannel. The first byte tells
// the two apart: frameMagic's high nibble is neither 4 nor 6.
//
// Wire layout of a frame header, big-endian:
//
//	0     magic 0xf1 (high nibble 0xf, version 1)
//	1     flags (frameCsum, frameTSO, frameECN)
//	2     chunk index, from 0
//	3     chunk count, 1 to 255
//	4..5  TCP segment size of a super-packet, else 0
//	6..7  frame id: tells one frame's chunks from another's
const (
	frameMagic     = 0xf1
	frameHeaderLen = 8
	maxChunks      = 255
)

// Frame flags: the offloads the receiving TUN is to finish.
const (
	frameCsum       = 1 << iota // complete the TCP or UDP checksum
	frameTSO                    // a TCP super-packet: cut into segments of gsoSize
	frameECN                    // the super-packet's TCP uses ECN (VIRTIO_NET_HDR_GSO_ECN)
	frameFlagsKnown = frameCsum | frameTSO | frameECN
)

// frameHeader is the header of one chunk.
type frameHeader struct {
	flags   uint8
	index   uint8
	count   uint8
	gsoSize uint16
	id      uint16
}

func (h frameHeader) put(b []byte) {
	b[0], b[1], b[2], b[3] = frameMagic, h.flags, h.index, h.count
	binary.BigEndian.PutUint16(b[4:], h.gsoSize)
	binary.BigEndian.PutUint16(b[6:], h.id)
}

// parseFrameHeader reads the header of a chunk; ok is false when b is not
// a chunk of a frame this version understands.
func parseFrameHeader(b []byte) (h frameHeader, ok bool) {
	if len(b) < frameHeaderLen || b[0] != frameMagic {
		return h, false
	}
	h = frameHeader{
		flags: b[1], index: b[2], count: b[3],
		gsoSize: binary.BigEndian.Uint16(b[4:]), id: binary.BigEndian.Uint16(b[6:]),
	}
	return h, h.flags&^frameFlagsKnown == 0 && h.count > 0 && h.index < h.count
}

// isFrame reports whether a datagram starts with a frame header rather than
// an IP packet.
func isFrame(b []byte) bool { return len(b) > 0 && b[0]>>4 == frameMagic>>4 }

// chunkCount is the number of chunks of at most chunk bytes a packet of
// size bytes is cut into.
func chunkCount(size, chunk int) int { return (size + chunk - 1) / chunk }

// l4CsumOffset is where the checksum sits in the transport header of
// protocol proto, for the protocols whose checksum a TUN leaves pending.
func l4CsumOffset(proto byte) (uint16, bool) {
	switch proto {
	case unix.IPPROTO_TCP:
		return 16, true
	case unix.IPPROTO_UDP:
		return 6, true
	}
	return 0, false
}

var errOffload = errors.New("offload felt cannot carry")

// frameFlagsFor translates the pending offloads of an IPv4 packet read from
// the TUN into frame flags. The TUN is only offered checksums and TCPv4
// segmentation (tun.go), so anything else is refused rather than guessed.
func frameFlagsFor(vh vnetHdr, pkt []byte) (flags uint8, gsoSize uint16, err error) {
	if len(pkt) < ipv4HeaderLen || pkt[0]>>4 != 4 {
		return 0, 0, fmt.Errorf("%w: not IPv4", errOffload)
	}
	ihl := uint16(pkt[0]&0x0f) * 4
	proto := pkt[9]
	if vh.flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
		off, ok := l4CsumOffset(proto)
		if !ok || vh.csumStart != ihl || vh.csumOffset != off {
			return 0, 0, fmt.Errorf("%w: checksum of protocol %d at %d+%d", errOffload, proto, vh.csumStart, vh.csumOffset)
		}
		flags |= frameCsum
	}
	switch vh.gsoType &^ unix.VIRTIO_NET_HDR_GSO_ECN {
	case unix.VIRTIO_NET_HDR_GSO_NONE:
		return flags, 0, nil
	case unix.VIRTIO_NET_HDR_GSO_TCPV4:
		if proto != unix.IPPROTO_TCP || flags&frameCsum == 0 || vh.gsoSize == 0 {
			return 0, 0, fmt.Errorf("%w: TCPv4 segmentation of protocol %d, segment size %d", errOffload, proto, vh.gsoSize)
		}
		flags |= frameTSO
		if vh.gsoType&unix.VIRTIO_NET_HDR_GSO_ECN != 0 {
			flags |= frameECN
		}
		return flags, vh.gsoSize, nil
	}
	return 0, 0, fmt.Errorf("%w: GSO type %d", errOffload, vh.gsoType)
}

// vnetFor returns the TUN header that gives pkt, a whole IPv4 packet that
// arrived in a frame with flags and gsoSize, back its pending offloads. It
// derives the offsets from the packet itself rather than trusting a peer
// for them; ok is false when the packet cannot carry what flags claim.
func vnetFor(flags uint8, gsoSize uint16, pkt []byte) (vh vnetHdr, ok bool) {
	if flags&^frameFlagsKnown != 0 || len(pkt) < ipv4HeaderLen {
		return vh, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	proto := pkt[9]
	if flags&frameCsum != 0 {
		off, known := l4CsumOffset(proto)
		if !known || len(pkt) < ihl+int(off)+2 {
			return vh, false
		}
		vh.flags = unix.VIRTIO_NET_HDR_F_NEEDS_CSUM
		vh.csumStart, vh.csumOffset = uint16(ihl), off
	}
	if flags&frameTSO == 0 {
		return vh, flags&frameECN == 0
	}
	if flags&frameCsum == 0 || proto != unix.IPPROTO_TCP || gsoSize == 0 || len(pkt) < ihl+20 {
		return vh, false
	}
	doff := int(pkt[ihl+12]>>4) * 4
	if doff < 20 || len(pkt) < ihl+doff {
		return vh, false
	}
	vh.gsoType = unix.VIRTIO_NET_HDR_GSO_TCPV4
	if flags&frameECN != 0 {
		vh.gsoType |= unix.VIRTIO_NET_HDR_GSO_ECN
	}
	vh.gsoSize, vh.hdrLen = gsoSize, uint16(ihl+doff)
	return vh, true
}
