package dataplane

import "sync/atomic"

// Stats counts one network's traffic through its tunnel. Packets are those
// the TUN handed over or took, so a TCP super-packet of up to 64 KB counts
// once however many datagrams carried it. Bytes are those of the IP
// packets carried, without the UDP and IP headers or frame headers around
// them.
type Stats struct {
	TxPackets uint64 // read from the TUN and sent to a peer
	TxBytes   uint64
	// TxDropped were read from the TUN and not sent: not IPv4 (the kernel
	// sends some IPv6 to any device), no peer holds the destination, or the
	// send failed.
	TxDropped uint64
	RxPackets uint64 // received from peers and written to the TUN
	RxBytes   uint64
	// RxDropped were addressed to this host's subnet but not delivered:
	// their source was outside the pool or inside this host's subnet (a
	// forgery), or the TUN refused the write.
	RxDropped uint64
	// Unclaimed counts the packets on the network's port that no network
	// took: malformed, or addressed outside every local subnet using the
	// port. It belongs to the port, so networks sharing a port report the
	// same number.
	Unclaimed uint64
	// Incomplete counts the frames (packets cut into several datagrams)
	// abandoned with a datagram missing or out of order. Per port, as
	// Unclaimed.
	Incomplete uint64
}

// Counters accumulates a tunnel's Stats. It outlives the tunnel, so a TUN
// recreated after being deleted keeps counting where the old one stopped.
// The data path adds once per batch rather than once per packet.
type Counters struct {
	txPackets, txBytes, txDropped atomic.Uint64
	rxPackets, rxBytes, rxDropped atomic.Uint64
}

func (c *Counters) sent(packets, bytes, dropped uint64) {
	if packets > 0 {
		c.txPackets.Add(packets)
		c.txBytes.Add(bytes)
	}
	if dropped > 0 {
		c.txDropped.Add(dropped)
	}
}

func (c *Counters) received(packets, bytes uint64) {
	c.rxPackets.Add(packets)
	c.rxBytes.Add(bytes)
}

func (c *Counters) snapshot() Stats {
	return Stats{
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(), TxDropped: c.txDropped.Load(),
		RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(), RxDropped: c.rxDropped.Load(),
	}
}
