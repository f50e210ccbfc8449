// Package probe checks every peer of every attached felt network THROUGH
// the overlay: an ICMP echo from this host's bridge gateway to the peer's
// bridge gateway (the first address of its leased subnet), which the
// kernel routes over the network's backend (vxlan VTEP, host-gw route, udp
// TUN), and whose reply comes back the same way (it is addressed to this
// host's gateway, inside this host's subnet). A blocked encapsulation port,
// a host-gw peer off the L2 segment or a missing route all show as
// "unreachable over the overlay"; a second, full-size echo (the network's
// MTU, don't-fragment set) shows an MTU black hole.
//
// The Prober (prober.go) schedules the probes at a modest rate with a
// global cap, keeps each peer's result (results.go), logs once per change,
// not per probe, and tells an Observer (felt's metrics). The ICMP side is
// ICMP (pinger.go); tests use a fake Pinger.
package probe

import (
	"context"
	"net/netip"
	"time"
)

// Target is one peer of one attached network, as probed from this host.
type Target struct {
	Network  string       // Docker's network ID on this host
	Pool     netip.Prefix // the network's pool
	Backend  string
	HostID   string       // the peer's host ID
	PublicIP netip.Addr   // the peer's underlay address
	Subnet   netip.Prefix // the peer's leased subnet
	Src      netip.Addr   // this host's gateway in the network (the probe's source)
	Dst      netip.Addr   // the peer's gateway: the first address of Subnet
	MTU      int          // the network's MTU: the full-size probe's size
}

// Key identifies a peer across refreshes of the targets: a peer whose
// public IP changes is a new peer (its metrics series are labelled with
// it).
type Key struct {
	Pool     netip.Prefix
	Subnet   netip.Prefix
	HostID   string
	PublicIP netip.Addr
}

// KeyOf is t's key.
func KeyOf(t Target) Key {
	return Key{Pool: t.Pool, Subnet: t.Subnet, HostID: t.HostID, PublicIP: t.PublicIP}
}

// Result is what the probes of one peer found.
type Result struct {
	Probed    bool          // false until the first probe finished
	Reachable bool          // the small echo was answered
	MTUOK     bool          // the full-size echo was answered too (false when unreachable)
	RTT       time.Duration // round trip of the last answered small echo
	Since     time.Time     // when Reachable or MTUOK last changed (the first probe counts)
	Last      time.Time     // when the last probe finished
	Err       string        // why the last small echo, or else the full-size one, failed
}

// Pinger sends one ICMP echo request with size bytes of data from src to
// dst, with don't-fragment set, and waits up to wait for its reply,
// returning the round-trip time.
type Pinger interface {
	Ping(ctx context.Context, src, dst netip.Addr, size int, wait time.Duration) (time.Duration, error)
}

// Observer is told every peer's result (felt's metrics). peer is the
// peer's public IP, as `felt status` shows it. Its methods must not block.
type Observer interface {
	SetPeer(pool, peer string, reachable bool, rtt time.Duration)
	SetPeerMTU(pool, peer string, ok bool)
	ForgetPeer(pool, peer string)
}
