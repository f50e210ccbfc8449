package overlay

import (
	"context"
	"errors"
	"net/netip"

	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/lease"
)

// Backend is one way of carrying a network's traffic between hosts, and
// the description of that way the rest of felt needs: its name, what it
// costs in MTU, which network options it takes, what it publishes in this
// host's leases, and what it refuses at network creation. Nothing outside
// a backend's package knows it by name.
//
// Setup, Sync and Teardown are idempotent and level-triggered: they compare
// the kernel with what they are given and fix the difference, so they can
// be called after a restart, a missed event, or someone deleting a device
// by hand.
type Backend interface {
	// Name is the value of the network option backend=… that selects it,
	// recorded in the shared network record.
	Name() string
	// Overhead is the bytes its encapsulation adds to each packet: the
	// container MTU is the underlay's minus this.
	Overhead() int
	// Options says which network options it takes.
	Options() Options
	// LeaseData is what this host publishes in its lease of pool for its
	// peers' backends (vxlan: the VTEP MAC): a value that encodes as a JSON
	// object, or nil for nothing. Its keys must not be lease's own
	// (lease.IsLeaseKey) nor another backend's.
	LeaseData(pool netip.Prefix) any
	// DeviceName is the name of the device Setup makes for n, or "" for
	// none (host-gw) or a network too malformed to have one (Setup says
	// why). Two networks whose devices share a name cannot both be served.
	DeviceName(n Network) string
	// Check reports, at network creation, a layout the backend cannot
	// serve, so that `docker network create` fails with the reason rather
	// than the network silently black-holing traffic. peers lists the live
	// leases of n's pool held by other hosts; it reads the store, so a
	// backend with nothing to check does not call it.
	Check(ctx context.Context, n Network, peers func(context.Context) ([]lease.Lease, error)) error

	// Setup creates (or repairs) the network's own device, if the backend
	// has one: the VTEP for vxlan, the TUN for udp. host-gw has none.
	Setup(ctx context.Context, n Network) error
	// Sync makes the kernel entries towards peers (routes, neighbour and FDB
	// entries) exactly match peers: the leases of n.Pool held by other hosts,
	// none expired, each one CheckPeer accepts (the Manager leaves the others
	// out). Entries for subnets not in peers are removed, including those
	// left by an earlier run.
	Sync(ctx context.Context, n Network, peers []lease.Lease) error
	// Teardown removes everything Setup and Sync made for n.
	Teardown(ctx context.Context, n Network) error
}

// Options are the network options (docker network create -o) a backend
// takes besides backend and the MTU, which every backend takes.
type Options struct {
	// VNI: its networks need a VNI, allocated when not given (-o vni).
	VNI bool
	// DirectRouting: it takes -o directrouting.
	DirectRouting bool
	// DefaultPort, when not 0, is the UDP port of its networks when none
	// is given: it takes -o port.
	DefaultPort int
}

// Host is what backends need to know about the underlay.
type Host interface {
	Addr() (netip.Addr, error) // this host's public IP
	MTU() (int, error)         // the underlay interface's MTU
	Name() (string, error)     // the underlay interface's name
}

// NetNSHost is a Host living in a network namespace other than the one felt
// runs in (tests' namespace hosts). Netlink calls reach that namespace
// through their handle, but a TUN device and a socket are created in the
// namespace of the thread that opens them, and kernel events are followed
// in the namespace given to the subscription. A Host without it means
// felt's own namespace.
type NetNSHost interface {
	Host
	NetNS() netns.NsHandle
}

// DeltaSyncer is a Backend that can apply a change of a network's peers
// without going over all of them: with 10,000 peers a full Sync dumps and
// compares every neighbour, FDB entry and route of the network at each
// lease change (issue #14). The Manager calls SyncPeers for a lease change
// of a network it synced successfully before, with the peers that were
// added or changed since (changed) and the subnets whose peer went
// (removed); everything else is taken to be as the last successful Sync or
// SyncPeers left it. A full Sync still runs on the first pass, the
// periodic resync, Kick, kernel events and after any failure: it is what
// repairs entries changed behind felt's back.
type DeltaSyncer interface {
	// SyncPeers installs (or replaces) the entries of the changed peers
	// and removes those of the removed subnets. It returns an error
	// wrapping ErrFullSyncNeeded when it cannot tell that the kernel still
	// holds what the last sync left (the device was recreated since, say):
	// the Manager then runs a full Sync at once.
	SyncPeers(ctx context.Context, n Network, changed []lease.Lease, removed []netip.Prefix) error
}

// PeerChecker is a backend that can refuse a peer's lease for its own data
// in it (vxlan: a VTEP MAC that is none, or one that would capture other
// hosts' traffic). The Manager leaves such a lease out of every network's
// peers, logged once, as it does those CheckPeer refuses: the backend
// never sees it, and it fails no Sync.
type PeerChecker interface {
	CheckPeerData(n Network, l lease.Lease) error
}

// ErrFullSyncNeeded is what a DeltaSyncer's SyncPeers wraps when only a
// full Sync can bring the network in line.
var ErrFullSyncNeeded = errors.New("a full sync is needed")
