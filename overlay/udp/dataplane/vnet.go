package dataplane

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// vnetHdrLen is the size of struct virtio_net_hdr, which a TUN opened with
// IFF_VNET_HDR puts in front of every packet read and expects in front of
// every packet written.
const vnetHdrLen = 10

// vnetHdr is a virtio_net_hdr: the offloads still pending on a packet.
// A read packet with NEEDS_CSUM has its transport checksum left to the
// device (the field holds the pseudo-header sum); one with a GSO type is a
// super-packet of up to 64 KB that the device is to cut into segments of
// gsoSize payload bytes. Written back to a TUN, the same header makes the
// kernel carry the packet as such, so neither the checksums nor the
// segmentation ever happen in user space.
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

// The TUN uses the host's byte order for the header (legacy virtio; felt
// does not ask for TUNSETVNETLE). It never crosses the wire: frames carry
// their own header (frame.go).
func parseVnetHdr(b []byte) vnetHdr {
	return vnetHdr{
		flags:      b[0],
		gsoType:    b[1],
		hdrLen:     binary.NativeEndian.Uint16(b[2:]),
		gsoSize:    binary.NativeEndian.Uint16(b[4:]),
		csumStart:  binary.NativeEndian.Uint16(b[6:]),
		csumOffset: binary.NativeEndian.Uint16(b[8:]),
	}
}

func (h vnetHdr) put(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// pending reports whether the packet still needs work from a device: a
// checksum to complete or segments to cut.
func (h vnetHdr) pending() bool {
	return h.flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 || h.gsoType != unix.VIRTIO_NET_HDR_GSO_NONE
}
