package dataplane

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// maxSegments is the most datagrams one UDP GSO send or GRO receive
	// holds (the kernel's UDP_MAX_SEGMENTS).
	maxSegments = 64
	// maxPayload is the most one IPv4 UDP send may carry in total.
	maxPayload = 0xffff - ipv4HeaderLen - 8
)

// gsoSpace is the control buffer size of one UDP_SEGMENT message.
var gsoSpace = unix.CmsgSpace(2)

// putGSO writes into b (at least gsoSpace long) the control message telling
// the kernel to cut the send into datagrams of size bytes, and returns it.
func putGSO(b []byte, size uint16) []byte {
	b = b[:gsoSpace]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], size)
	return b
}

// groSize returns the size of the datagrams a UDP_GRO read coalesced, from
// its control data, or 0 when the read is a single datagram.
func groSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO {
			switch {
			case len(data) >= 4: // the kernel sends an int
				return int(binary.NativeEndian.Uint32(data))
			case len(data) >= 2:
				return int(binary.NativeEndian.Uint16(data))
			}
			return 0
		}
		oob = rest
	}
	return 0
}
