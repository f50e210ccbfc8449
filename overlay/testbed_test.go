package overlay_test

import (
	"encoding/json"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
	tbed "github.com/felt-net/felt/testkit/testbed"
)

// The Manager's tests run on the testbed the backends' tests use
// (testkit/testbed), through the names they were written with.

var pool = tbed.Pool

const (
	underlayIface = tbed.UnderlayIface
	bridge        = tbed.Bridge
	vni           = tbed.VNI
)

type testbed struct{ hosts []*tbHost }

// tbHost is a testbed host with its fields under the tests' names (the
// backends map is the host's own).
type tbHost struct {
	*tbed.Host
	id     string
	ns     *netns.NS
	ctr    *netns.NS
	pub    netip.Addr
	subnet netip.Prefix
	logs   *syncBuffer
	b      map[string]overlay.Backend
}

func newTestbed(t *testing.T, pubs ...string) *testbed {
	t.Helper()
	tb := &testbed{}
	for _, h := range tbed.New(t, pubs...).Hosts {
		tb.hosts = append(tb.hosts, &tbHost{Host: h, id: h.ID, ns: h.NS, ctr: h.Ctr, pub: h.Pub, subnet: h.Subnet, logs: &syncBuffer{of: h.Logs}, b: h.B})
	}
	return tb
}

func hostsOf(hs []*tbHost) []*tbed.Host {
	out := make([]*tbed.Host, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.Host)
	}
	return out
}

// syncBuffer is a log sink safe for concurrent writes: a testbed host's
// log, or (the zero value) one of its own.
type syncBuffer struct {
	of  *testkit.LogBuffer // nil: own
	own testkit.LogBuffer
}

func (s *syncBuffer) buf() *testkit.LogBuffer {
	if s.of != nil {
		return s.of
	}
	return &s.own
}

func (s *syncBuffer) Write(p []byte) (int, error) { return s.buf().Write(p) }
func (s *syncBuffer) String() string              { return s.buf().String() }
func (s *syncBuffer) contains(sub string) bool    { return s.buf().Contains(sub) }

func (h *tbHost) network(backend string, direct bool) overlay.Network {
	return h.Network(backend, direct)
}
func (h *tbHost) ctrIP() netip.Addr          { return h.CtrIP() }
func (h *tbHost) lease() lease.Lease         { return h.Lease() }
func (h *tbHost) leaseData() json.RawMessage { return h.LeaseData() }
func (h *tbHost) apply(t *testing.T, n overlay.Network, peers ...*tbHost) {
	t.Helper()
	h.Apply(t, n, hostsOf(peers)...)
}

func leases(hosts ...*tbHost) []lease.Lease { return tbed.Leases(hostsOf(hosts)...) }

func feltRoutes(t *testing.T, h *tbHost) map[netip.Prefix]netlink.Route {
	t.Helper()
	return tbed.FeltRoutes(t, h.Host)
}

func neighbours(t *testing.T, h *tbHost) map[netip.Addr]netlink.Neigh {
	t.Helper()
	return tbed.Neighbours(t, h.Host)
}

func fdb(t *testing.T, h *tbHost) map[string]netip.Addr {
	t.Helper()
	return tbed.FDB(t, h.Host)
}

func ipnet(s string) *net.IPNet { return tbed.IPNet(s) }

func standardBackends(cfg overlay.BackendConfig) map[string]overlay.Backend {
	return tbed.StandardBackends(cfg)
}

func registryOf(m map[string]overlay.Backend) *overlay.Backends { return tbed.RegistryOf(m) }

// fakeHost and nsHost are tbed.FakeHost and tbed.NSHost as the Manager's
// tests spell them.
type fakeHost struct{ addr netip.Addr }

func (h fakeHost) Addr() (netip.Addr, error) { return h.addr, nil }
func (h fakeHost) MTU() (int, error)         { return tbed.FakeHost{}.MTU() }
func (h fakeHost) Name() (string, error)     { return tbed.FakeHost{}.Name() }

type nsHost struct {
	fakeHost
	ns vnetns.NsHandle
}

func (h nsHost) NetNS() vnetns.NsHandle { return h.ns }
