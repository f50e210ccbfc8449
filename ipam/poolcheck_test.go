package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// faultStore fails writes to keys containing failOn (when set).
type faultStore struct {
	kv.Store
	failOn string
}

var errInjected = errors.New("injected store failure")

func (s *faultStore) CAS(ctx context.Context, key string, v []byte, index uint64) error {
	if s.failOn != "" && strings.Contains(key, s.failOn) {
		return errInjected
	}
	return s.Store.CAS(ctx, key, v, index)
}

func (s *faultStore) Put(ctx context.Context, key string, v []byte) error {
	if s.failOn != "" && strings.Contains(key, s.failOn) {
		return errInjected
	}
	return s.Store.Put(ctx, key, v)
}

func (s *faultStore) Txn(ctx context.Context, ops []kv.Op) (uint64, error) {
	for _, op := range ops {
		if s.failOn != "" && op.Verb != kv.OpCheck && strings.Contains(op.Key, s.failOn) {
			return 0, errInjected
		}
	}
	return s.Store.Txn(ctx, ops)
}

type checkEnv struct {
	d     *ipam.Driver
	st    *state.Store
	store *faultStore
	nets  []ipam.HostNetwork
}

func newCheckDriver(t *testing.T) *checkEnv {
	t.Helper()
	s := openKV(t, filepath.Join(t.TempDir(), "db"))
	e := &checkEnv{store: &faultStore{Store: s}}
	e.st = state.New(e.store)
	e.d = ipam.New(ipam.Config{
		State:    e.st,
		Registry: lease.NewRegistry(e.store, "felt/", nil),
		Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
			return lease.Owner{HostID: "host-a", PublicIP: netip.MustParseAddr("192.0.2.1")}, nil
		},
		HostNetworks: func(context.Context, netip.Prefix) ([]ipam.HostNetwork, error) { return e.nets, nil },
	})
	return e
}

// keys is every key in the store, local state and shared records alike.
func (e *checkEnv) keys(t *testing.T) []string {
	t.Helper()
	pairs, _, err := e.store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pairs {
		out = append(out, p.Key+"="+string(p.Value))
	}
	return out
}

// Pools that cannot be a container network are refused with an error
// naming the rule, and nothing is written for them: 0.0.0.0/0 used to be
// accepted, its network record then made every later pool "overlap" it.
func TestUnusablePoolsRefusedWithoutWrites(t *testing.T) {
	e := newCheckDriver(t)
	e.nets = []ipam.HostNetwork{
		{Iface: "lo", Prefix: netip.MustParsePrefix("127.0.0.0/8")},
		{Iface: "eth0", Prefix: netip.MustParsePrefix("192.0.2.0/24")},
		{Iface: "docker0", Prefix: netip.MustParsePrefix("172.17.0.0/16")},
		{Iface: "felt-0123456789", Prefix: netip.MustParsePrefix("10.42.7.0/24"), Felt: true},
	}
	// A pool in use first, so that the store is not empty.
	if _, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.40.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	before := e.keys(t)
	cases := []struct{ pool, want string }{
		{"0.0.0.0/0", "is the default route"},
		{"0.0.0.0/1", "is too large: felt accepts pools from /8 to /30"},
		{"10.0.0.0/7", "is too large"},
		{"0.0.0.0/8", `overlaps the "this network" range 0.0.0.0/8`},
		{"0.1.0.0/16", `overlaps the "this network" range 0.0.0.0/8`},
		{"127.0.0.0/8", "overlaps the loopback range 127.0.0.0/8"},
		{"127.42.0.0/16", "overlaps the loopback range"},
		{"169.254.0.0/16", "overlaps the link-local range 169.254.0.0/16"},
		{"169.0.0.0/8", "overlaps the link-local range"},
		{"224.0.0.0/8", "overlaps the multicast range 224.0.0.0/4"},
		{"239.1.0.0/16", "overlaps the multicast range"},
		{"240.0.0.0/8", "overlaps the reserved range 240.0.0.0/4"},
		{"255.255.255.0/24", "overlaps the reserved range"},
		{"10.42.0.0/31", "too small"},
		{"192.0.2.0/25", "overlaps 192.0.2.0/24, the network of this host's interface eth0"},
		{"172.16.0.0/12", "the network of this host's interface docker0"},
		{"10.32.0.0/12", "overlaps the pool 10.40.0.0/16 of another felt network on this host"},
	}
	for _, c := range cases {
		_, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: c.pool})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--subnet %s: error %v, want it to contain %q", c.pool, err, c.want)
		}
		if after := e.keys(t); !slices.Equal(before, after) {
			t.Fatalf("--subnet %s was refused but the store changed:\nbefore %v\nafter  %v", c.pool, before, after)
		}
	}
	// A normal pool still works afterwards, and so does one holding felt's
	// own bridge (felt's link for this very pool, from before a restart).
	for _, p := range []string{"10.43.0.0/16", "10.42.0.0/16", "10.0.0.0/12"} {
		if _, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: p}); err != nil {
			t.Fatalf("--subnet %s after the refusals: %v", p, err)
		}
	}
}

// A failure after the network record was written (the lease could not be
// taken) removes the record again: the refused pool does not block every
// overlapping pool for good.
func TestFailedLeaseLeavesNoNetworkRecord(t *testing.T) {
	e := newCheckDriver(t)
	before := e.keys(t)
	e.store.failOn = "/leases/"
	_, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if !errors.Is(err, errInjected) {
		t.Fatalf("error %v, want the injected lease failure", err)
	}
	if after := e.keys(t); !slices.Equal(before, after) {
		t.Fatalf("failed request left %v", after)
	}
	// A local write failing after the lease: lease and records undone.
	e.store.failOn = "local/pools/"
	if _, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"}); !errors.Is(err, errInjected) {
		t.Fatalf("error %v, want the injected state failure", err)
	}
	if after := e.keys(t); !slices.Equal(before, after) {
		t.Fatalf("failed request left %v", after)
	}
	e.store.failOn = ""
	if _, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.0.0.0/8"}); err != nil {
		t.Fatal(err)
	}
}

// The largest pool allowed, in the smallest host subnets (four million of
// them): RequestPool and the first addresses cost memory in proportion to
// what is in use, not to the pool.
func TestHugePoolSmallSubnetsMemory(t *testing.T) {
	e := newCheckDriver(t)
	withFeltNetwork(t, e.st, "10.0.0.0/8")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.0.0.0/8", Options: map[string]string{"subnet_len": "30"}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Fatalf("RequestPool of a /8 in /30s and one address allocated %d bytes, want under 8 MiB", got)
	}
	sub := netip.MustParsePrefix(resp.Pool)
	if sub.Bits() != 30 || netip.MustParsePrefix(a.Address).Addr() != sub.Addr().Next().Next() {
		t.Fatalf("pool %s address %s", resp.Pool, a.Address)
	}
	// A /30 holds one container: the next request says so.
	_, err = e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()})
	if err == nil || !strings.Contains(err.Error(), "no free address left") {
		t.Fatalf("second address in a /30: %v", err)
	}
}

// Malformed requests get errors or are ignored, never a crash, and a
// PoolID spelled differently does not reach another pool's record.
func TestMalformedRequests(t *testing.T) {
	e := newCheckDriver(t)
	withFeltNetwork(t, e.st, testPool)
	resp, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.RequestPool(ctx, nil); err == nil {
		t.Fatal("nil RequestPool accepted")
	}
	if _, err := e.d.RequestAddress(ctx, nil); err == nil {
		t.Fatal("nil RequestAddress accepted")
	}
	if err := e.d.ReleasePool(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.d.ReleaseAddress(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "felt_10.42.0.0_16", "felt/10.42.0.0_16", "felt/10.42.0.1/16", "felt/::/0", strings.Repeat("x", 1<<16)} {
		if err := e.d.ReleasePool(ctx, &api.ReleasePoolRequest{PoolID: id}); err != nil {
			t.Fatalf("ReleasePool(%.20q): %v", id, err)
		}
		if _, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: id}); err == nil || !strings.Contains(err.Error(), "unknown pool ID") {
			t.Fatalf("RequestAddress(%.20q): %v", id, err)
		}
	}
	for _, addr := range []string{"", "nope", "::1", "10.42.0.0/99", fmt.Sprint(strings.Repeat("1", 100))} {
		if _, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Address: addr, Options: endpointOpts()}); addr != "" && err == nil {
			t.Fatalf("RequestAddress %q accepted", addr)
		}
		_ = e.d.ReleaseAddress(ctx, &api.ReleaseAddressRequest{PoolID: resp.PoolID, Address: addr})
	}
	for _, o := range []map[string]string{{"subnet_len": "-1"}, {"subnet_len": "99999999999999999999"}, {"subnet_len": ""}, {"": ""}} {
		if _, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.43.0.0/16", Options: o}); err == nil {
			t.Fatalf("options %v accepted", o)
		}
	}
	// The pool is still held once: the odd spellings released nothing.
	if _, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()}); err != nil {
		t.Fatalf("pool released by a malformed request: %v", err)
	}
}
