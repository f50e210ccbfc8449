package ipam_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

type env struct {
	d  *ipam.Driver
	st *state.Store
}

// testPool is the pool of the felt network newDriver records.
const testPool = "10.42.0.0/16"

// withFeltNetwork records a felt network of pool in st, as the network
// driver's CreateNetwork does: the IPAM hands containers addresses only in
// the pools of felt networks. It returns the network's ID.
func withFeltNetwork(t *testing.T, st *state.Store, pool string) string {
	t.Helper()
	id := "net-" + strings.ReplaceAll(pool, "/", "_")
	if err := st.PutNetwork(ctx, state.Network{ID: id, Pool: netip.MustParsePrefix(pool)}); err != nil {
		t.Fatal(err)
	}
	return id
}

// openKV opens an embedded store at path, closed when the test ends.
func openKV(t *testing.T, path string) *boltkv.Store {
	t.Helper()
	s, err := boltkv.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newDriver(t *testing.T, path string) *env {
	t.Helper()
	s := openKV(t, path)
	e := &env{st: state.New(s)}
	withFeltNetwork(t, e.st, testPool)
	e.d = ipam.New(ipam.Config{
		State:    e.st,
		Registry: lease.NewRegistry(s, "felt/", nil),
		Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
			return lease.Owner{HostID: "host-a", PublicIP: netip.MustParseAddr("192.0.2.1")}, nil
		},
	})
	return e
}

var ctx = context.Background()

func endpointOpts() map[string]string {
	return map[string]string{"com.docker.network.endpoint.macaddress": "02:42:0a:00:00:01"}
}

func TestRequestPoolLeasesHostSubnet(t *testing.T) {
	e := newDriver(t, filepath.Join(t.TempDir(), "db"))
	resp, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	sub := netip.MustParsePrefix(resp.Pool)
	if sub.Bits() != 24 || !netip.MustParsePrefix("10.42.0.0/16").Contains(sub.Addr()) {
		t.Fatalf("pool %s: want a /24 of 10.42.0.0/16", resp.Pool)
	}
	wantGW := netip.PrefixFrom(sub.Addr().Next(), 24).String()
	if resp.Data["com.docker.network.gateway"] != wantGW {
		t.Fatalf("gateway %q, want %q", resp.Data["com.docker.network.gateway"], wantGW)
	}
	// Reference counted and idempotent: same ID, same subnet.
	again, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if err != nil || again.PoolID != resp.PoolID || again.Pool != resp.Pool {
		t.Fatalf("second RequestPool: %+v %v", again, err)
	}
	if err := e.d.ReleasePool(ctx, &api.ReleasePoolRequest{PoolID: resp.PoolID}); err != nil {
		t.Fatal(err)
	}
	// Still held once: addresses still come.
	if _, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()}); err != nil {
		t.Fatalf("pool released too early: %v", err)
	}
	if err := e.d.ReleasePool(ctx, &api.ReleasePoolRequest{PoolID: resp.PoolID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID}); err == nil || !strings.Contains(err.Error(), "unknown pool ID") {
		t.Fatalf("after last release: %v", err)
	}
	// Releases of unknown things succeed.
	if err := e.d.ReleasePool(ctx, &api.ReleasePoolRequest{PoolID: "felt/10.9.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.ReleaseAddress(ctx, &api.ReleaseAddressRequest{PoolID: "nope", Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
}

func TestAddressesSequentialAndExhaustion(t *testing.T) {
	e := newDriver(t, filepath.Join(t.TempDir(), "db"))
	resp, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16", Options: map[string]string{"subnet_len": "28"}})
	if err != nil {
		t.Fatal(err)
	}
	sub := netip.MustParsePrefix(resp.Pool)
	if sub.Bits() != 28 {
		t.Fatalf("subnet_len ignored: %s", sub)
	}
	a1, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()})
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.PrefixFrom(sub.Addr().Next().Next(), 28).String(); a1.Address != want {
		t.Fatalf("first address %s, want %s (after the gateway)", a1.Address, want)
	}
	if err := e.d.ReleaseAddress(ctx, &api.ReleaseAddressRequest{PoolID: resp.PoolID, Address: strings.Split(a1.Address, "/")[0]}); err != nil {
		t.Fatal(err)
	}
	a2, _ := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()})
	if a2.Address == a1.Address {
		t.Fatal("a just-released address was handed out again at once")
	}

	seen := map[string]bool{a2.Address: true}
	// /28: 16 addresses, minus network, broadcast and gateway = 13 usable.
	for i := 0; i < 12; i++ {
		a, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()})
		if err != nil {
			t.Fatalf("address %d: %v", i, err)
		}
		if seen[a.Address] {
			t.Fatalf("duplicate address %s", a.Address)
		}
		seen[a.Address] = true
	}
	_, err = e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()})
	if err == nil || !strings.Contains(err.Error(), "no free address left in "+sub.String()) {
		t.Fatalf("exhaustion error = %v", err)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := boltkv.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(s *boltkv.Store) *ipam.Driver {
		return ipam.New(ipam.Config{State: state.New(s), Registry: lease.NewRegistry(s, "felt/", nil),
			Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
				return lease.Owner{HostID: "h", PublicIP: netip.MustParseAddr("192.0.2.1")}, nil
			}})
	}
	withFeltNetwork(t, state.New(s), testPool)
	d := mk(s)
	resp, err := d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()})
	s.Close()

	s2, err := boltkv.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	d2 := mk(s2)
	a2, err := d2.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()})
	if err != nil {
		t.Fatalf("pool ID not valid after restart: %v", err)
	}
	if a2.Address == a1.Address {
		t.Fatalf("address %s handed out twice across a restart", a1.Address)
	}
	// Releasing an address allocated before the restart works.
	if err := d2.ReleaseAddress(ctx, &api.ReleaseAddressRequest{PoolID: resp.PoolID, Address: strings.Split(a1.Address, "/")[0]}); err != nil {
		t.Fatal(err)
	}
	// The same pool requested again after all releases gets the same subnet.
	if err := d2.ReleasePool(ctx, &api.ReleasePoolRequest{PoolID: resp.PoolID}); err != nil {
		t.Fatal(err)
	}
	again, err := d2.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if err != nil || again.Pool != resp.Pool {
		t.Fatalf("re-created pool got %v (%v), want the previous subnet %s", again, err, resp.Pool)
	}
}

func TestStaticAddressAndRange(t *testing.T) {
	e := newDriver(t, filepath.Join(t.TempDir(), "db"))
	resp, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16", SubPool: "10.42.9.64/26"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Pool != "10.42.9.0/24" {
		t.Fatalf("pool %s: want the /24 holding --ip-range", resp.Pool)
	}
	a, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()})
	if err != nil {
		t.Fatal(err)
	}
	if !netip.MustParsePrefix("10.42.9.64/26").Contains(netip.MustParsePrefix(a.Address).Addr()) {
		t.Fatalf("address %s outside --ip-range", a.Address)
	}
	// --ip inside the host subnet (even outside the range) is honoured.
	got, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Address: "10.42.9.7", Options: endpointOpts()})
	if err != nil || got.Address != "10.42.9.7/24" {
		t.Fatalf("static: %v %v", got, err)
	}
	_, err = e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Address: "10.42.9.7", Options: endpointOpts()})
	if err == nil || !strings.Contains(err.Error(), "10.42.9.7 is already in use") {
		t.Fatalf("duplicate static: %v", err)
	}
	_, err = e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Address: "10.42.200.7", Options: endpointOpts()})
	if err == nil || !strings.Contains(err.Error(), "outside this host's subnet 10.42.9.0/24") {
		t.Fatalf("outside: %v", err)
	}
	// An aux address (no endpoint options) is reserved, then not handed out.
	if _, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Address: "10.42.9.8"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Address: "10.42.9.8", Options: endpointOpts()}); err == nil {
		t.Fatal("aux address handed to a container")
	}
	// The gateway request gives the subnet's first address.
	gw, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: map[string]string{"RequestAddressType": "com.docker.network.gateway"}})
	if err != nil || gw.Address != "10.42.9.1/24" {
		t.Fatalf("gateway: %v %v", gw, err)
	}
}

func TestFeltIPAMWithOtherDriverRefused(t *testing.T) {
	e := newDriver(t, filepath.Join(t.TempDir(), "db"))
	if err := e.st.DeleteNetwork(ctx, withFeltNetwork(t, e.st, testPool)); err != nil {
		t.Fatal(err)
	}
	resp, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: resp.PoolID, Options: endpointOpts()})
	if err == nil || !strings.Contains(err.Error(), "-d felt:latest") {
		t.Fatalf("error = %v", err)
	}
}

func TestBadPoolRequests(t *testing.T) {
	e := newDriver(t, filepath.Join(t.TempDir(), "db"))
	cases := []struct {
		req  api.RequestPoolRequest
		want string
	}{
		{api.RequestPoolRequest{}, "felt needs --subnet"},
		{api.RequestPoolRequest{Pool: "10.42.0.0/33"}, "is not a CIDR"},
		{api.RequestPoolRequest{Pool: "banana"}, "is not a CIDR"},
		{api.RequestPoolRequest{Pool: "10.42.1.0/16"}, "has host bits set"},
		{api.RequestPoolRequest{Pool: "10.42.0.0/16", V6: true}, "IPv4 only"},
		{api.RequestPoolRequest{Pool: "10.42.0.0/16", Options: map[string]string{"subnet_len": "8"}}, "subnet_len=8: must be a number from 16 to 30"},
		{api.RequestPoolRequest{Pool: "10.42.0.0/16", Options: map[string]string{"subnet_len": "x"}}, "subnet_len=x"},
		{api.RequestPoolRequest{Pool: "10.42.0.0/16", Options: map[string]string{"size": "1"}}, `unknown --ipam-opt "size": felt's IPAM accepts only subnet_len`},
		{api.RequestPoolRequest{Pool: "10.42.0.0/16", SubPool: "10.43.0.0/24"}, "is not inside --subnet"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.req), func(t *testing.T) {
			_, err := e.d.RequestPool(ctx, &c.req)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want it to contain %q", err, c.want)
			}
		})
	}
}
