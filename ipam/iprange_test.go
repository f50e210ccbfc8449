package ipam_test

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	api "github.com/docker/go-plugins-helpers/ipam"
)

// A second pool request for the same --subnet with an --ip-range inside
// this host's subnet shares the subnet. Releasing it (Docker does so when
// the network it was for is refused) frees only what it allocated: the
// first request's containers keep their addresses, its gateway stays, and
// no later allocation hands them out again.
func TestIPRangeReleaseKeepsLiveAddresses(t *testing.T) {
	e := newDriver(t, filepath.Join(t.TempDir(), "db"))
	a, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16", Options: map[string]string{"subnet_len": "28"}})
	if err != nil {
		t.Fatal(err)
	}
	sub := netip.MustParsePrefix(a.Pool)
	gw := netip.MustParsePrefix(a.Data["com.docker.network.gateway"]).Addr()
	var live []netip.Addr
	for range 3 {
		r, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: a.PoolID, Options: endpointOpts()})
		if err != nil {
			t.Fatal(err)
		}
		live = append(live, netip.MustParsePrefix(r.Address).Addr())
	}

	// The range: the upper half of this host's /28.
	rng := netip.PrefixFrom(sub.Addr(), 29)
	rng = netip.PrefixFrom(rng.Addr().Next().Next().Next().Next().Next().Next().Next().Next(), 29)
	b, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16", SubPool: rng.String()})
	if err != nil {
		t.Fatal(err)
	}
	if b.Pool != a.Pool || b.PoolID == a.PoolID {
		t.Fatalf("second request: pool %s ID %s; want the shared subnet %s under its own ID", b.Pool, b.PoolID, a.Pool)
	}
	rb, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: b.PoolID, Options: endpointOpts()})
	if err != nil {
		t.Fatal(err)
	}
	fromB := netip.MustParsePrefix(rb.Address).Addr()
	// A release through the other pool request must not free a live address.
	if err := e.d.ReleaseAddress(ctx, &api.ReleaseAddressRequest{PoolID: b.PoolID, Address: live[0].String()}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.ReleasePool(ctx, &api.ReleasePoolRequest{PoolID: b.PoolID}); err != nil {
		t.Fatal(err)
	}

	// Every address the first pool request can still get: none is live
	// or the gateway, and the second request's own address came back.
	got := map[netip.Addr]bool{}
	for {
		r, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: a.PoolID, Options: endpointOpts()})
		if err != nil {
			if !strings.Contains(err.Error(), "no free address left") {
				t.Fatal(err)
			}
			break
		}
		addr := netip.MustParsePrefix(r.Address).Addr()
		for _, l := range append(live, gw) {
			if addr == l {
				t.Fatalf("%s handed out again after the --ip-range pool request was released: it is in use", addr)
			}
		}
		got[addr] = true
	}
	if !got[fromB] {
		t.Fatalf("%s, allocated by the released pool request, was not freed", fromB)
	}
	// /28: 16 addresses minus network, broadcast, gateway and the live ones.
	if want := 16 - 3 - len(live); len(got) != want {
		t.Fatalf("%d addresses handed out, want %d", len(got), want)
	}

	// The last pool request of the subnet frees it all.
	if err := e.d.ReleasePool(ctx, &api.ReleasePoolRequest{PoolID: a.PoolID}); err != nil {
		t.Fatal(err)
	}
	again, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16", Options: map[string]string{"subnet_len": "28"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.d.RequestAddress(ctx, &api.RequestAddressRequest{PoolID: again.PoolID, Options: endpointOpts()})
	if err != nil || netip.MustParsePrefix(r.Address).Addr() != netip.MustParsePrefix(again.Pool).Addr().Next().Next() {
		t.Fatalf("after the last release: %v %v, want a fresh subnet's first address", r, err)
	}
}
