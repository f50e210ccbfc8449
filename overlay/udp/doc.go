// Package udp is the data path of felt's udp backend, flannel's first
// design done in batches: per network a TUN device whose IP packets are sent,
// each as one UDP datagram, to the host holding the destination's subnet;
// per UDP port one socket whose datagrams are written to the TUN of the
// network they are addressed to.
//
// flannel's udp backend crossed between kernel and user space once per
// packet in each direction, which is why it reached about a fifth of the
// host's throughput. Here every crossing carries a batch:
//
//   - The TUN is opened with IFF_VNET_HDR through wireguard-go's tun package,
//     so the kernel hands over TCP super-packets of up to 64 KB (TSO), split
//     into MTU-sized packets in user space, and takes coalesced ones back
//     (GRO): one read or write moves up to 64 KB.
//   - Datagrams leave with sendmmsg; consecutive packets of one size to one
//     peer go as a single UDP GSO send (UDP_SEGMENT), which the kernel cuts
//     into datagrams only at the device, or not at all on veth.
//   - Datagrams arrive with recvmmsg and UDP_GRO, so a run of them from one
//     sender is one buffer.
//   - Buffers are allocated when a tunnel or port starts, never per packet.
//     (x/net's ReadBatch does allocate the sender's address of each
//     datagram read; with UDP_GRO that is once per run of datagrams.)
//
// One socket per port is shared by every network using the port (Ports):
// the default port is the same for all networks, and a datagram's inner
// destination says which network it is for, since felt's pools never
// overlap. The socket must not become a relay: a datagram is delivered only
// when its packet is addressed to a local subnet using the port and comes
// from elsewhere in that network's pool.
package udp
