// Package dataplane is the data path of felt's udp backend (overlay/udp),
// flannel's first design done in batches: per network a TUN device whose IP packets are
// sent in UDP to the host holding the destination's subnet; per UDP port
// one socket whose datagrams are written to the TUN of the network they
// are addressed to.
//
// flannel's udp backend crossed between kernel and user space once per
// packet in each direction, which is why it reached about a fifth of the
// host's throughput. Here a crossing carries up to 64 KB:
//
//   - The TUN is opened with IFF_VNET_HDR and offered checksum and TCPv4
//     segmentation offload (tun.go), so the kernel hands over a TCP
//     stream's super-packets of up to 64 KB with their checksums pending.
//   - Such a packet crosses as a frame (frame.go): cut into datagrams of
//     the tunnel's MTU behind an 8-byte header, sent as one UDP GSO send
//     (UDP_SEGMENT) that the kernel cuts only at the device, or not at
//     all on veth. The receiver joins them (assembly.go) and writes the
//     super-packet whole to its TUN with the same offloads pending, so no
//     checksum is computed and no segment is cut in user space, on either
//     side. Other packets go as they are, one per datagram.
//   - Datagrams arrive with recvmmsg and UDP_GRO, so a run of them from
//     one sender is one buffer, and the datagrams of sends are batched
//     with sendmmsg.
//   - Buffers are allocated when a tunnel or port starts, never per packet.
//     (x/net's batch calls allocate a little per call, not per datagram.)
//
// One socket per port is shared by every network using the port (Ports):
// the default port is the same for all networks, and a packet's inner
// destination says which network it is for, since felt's pools never
// overlap. The socket must not become a relay: a packet is delivered only
// when it is addressed to a local subnet using the port and comes from
// elsewhere in that network's pool, and only the offloads felt itself
// offers (checksums, TCPv4 segmentation) are passed to the kernel, with
// offsets taken from the packet rather than from the peer.
package dataplane
