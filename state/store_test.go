package state_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/state"
)

var ctx = context.Background()

// newStore returns a Store on a fresh embedded store, and the raw kv.Store
// under it so tests can check the stored keys and JSON.
func newStore(t *testing.T) (*state.Store, kv.Store) {
	t.Helper()
	s, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return state.New(s), s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// raw is the stored value at key, as a map: the stored format (keys and
// JSON field names) is storeformat.Local's and must not change.
func raw(t *testing.T, s kv.Store, key string) map[string]any {
	t.Helper()
	p, err := s.Get(ctx, key)
	if err != nil {
		t.Fatalf("key %s: %v", key, err)
	}
	var m map[string]any
	if err := json.Unmarshal(p.Value, &m); err != nil {
		t.Fatalf("key %s: %v", key, err)
	}
	return m
}

func keys(t *testing.T, s kv.Store) []string {
	t.Helper()
	pairs, _, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pairs {
		out = append(out, p.Key)
	}
	return out
}

func TestKey(t *testing.T) {
	if got := state.Key(); got != "local/" {
		t.Fatalf("Key() = %q", got)
	}
	if got := state.Key("a", "b"); got != "local/a/b" {
		t.Fatalf("Key(a, b) = %q", got)
	}
}

func TestHostIDStable(t *testing.T) {
	st, s := newStore(t)
	id, err := st.HostID(ctx)
	must(t, err)
	if len(id) != 32 {
		t.Fatalf("host ID %q: want 32 hex characters", id)
	}
	again, err := st.HostID(ctx)
	if err != nil || again != id {
		t.Fatalf("second HostID = %q, %v; want %q", again, err, id)
	}
	// A second Store on the same kv (a restart) keeps it.
	if other, err := state.New(s).HostID(ctx); err != nil || other != id {
		t.Fatalf("HostID after restart = %q, %v; want %q", other, err, id)
	}
	if p, err := s.Get(ctx, "local/host-id"); err != nil || string(p.Value) != `"`+id+`"` {
		t.Fatalf("stored host ID %q, %v", p.Value, err)
	}
}

func TestNetworks(t *testing.T) {
	st, s := newStore(t)
	a := state.Network{ID: "aa", Pool: netip.MustParsePrefix("10.42.0.0/16"), Subnet: netip.MustParsePrefix("10.42.3.0/24"),
		Gateway: netip.MustParseAddr("10.42.3.1"), Bridge: "felt-aa", Backend: "vxlan", VNI: 1, MTU: 1450,
		DirectRouting: true, Port: 0, Internal: true}
	b := state.Network{ID: "bb", Pool: netip.MustParsePrefix("10.43.0.0/16"), Subnet: netip.MustParsePrefix("10.43.1.0/24"),
		Gateway: netip.MustParseAddr("10.43.1.1"), Bridge: "felt-bb", Backend: "udp", MTU: 1472, Port: 8285}
	if _, ok, err := st.Network(ctx, "aa"); err != nil || ok {
		t.Fatalf("absent network: ok %v, %v", ok, err)
	}
	must(t, st.PutNetwork(ctx, b))
	must(t, st.PutNetwork(ctx, a))
	if got, ok, err := st.Network(ctx, "aa"); err != nil || !ok || got != a {
		t.Fatalf("Network(aa) = %+v %v %v", got, ok, err)
	}
	if got, err := st.Networks(ctx); err != nil || !slices.Equal(got, []state.Network{a, b}) {
		t.Fatalf("Networks = %+v %v, want a then b", got, err)
	}
	if got, ok, err := st.NetworkOfPool(ctx, b.Pool); err != nil || !ok || got.ID != "bb" {
		t.Fatalf("NetworkOfPool(%s) = %+v %v %v", b.Pool, got, ok, err)
	}
	if _, ok, err := st.NetworkOfPool(ctx, netip.MustParsePrefix("10.42.0.0/17")); err != nil || ok {
		t.Fatalf("NetworkOfPool of another pool: ok %v, %v", ok, err)
	}
	want := map[string]any{"id": "aa", "pool": "10.42.0.0/16", "subnet": "10.42.3.0/24", "gateway": "10.42.3.1",
		"bridge": "felt-aa", "backend": "vxlan", "vni": 1.0, "mtu": 1450.0, "directRouting": true, "internal": true}
	if got := raw(t, s, "local/networks/aa"); !reflect.DeepEqual(got, want) {
		t.Fatalf("stored network %v, want %v", got, want)
	}
	must(t, st.DeleteNetwork(ctx, "aa"))
	must(t, st.DeleteNetwork(ctx, "aa")) // absent is fine
	if got, err := st.Networks(ctx); err != nil || !slices.Equal(got, []state.Network{b}) {
		t.Fatalf("Networks after delete = %+v %v", got, err)
	}
}

func TestEndpoints(t *testing.T) {
	st, s := newStore(t)
	ep := state.Endpoint{ID: "e1", NetworkID: "aa", Address: netip.MustParsePrefix("10.42.3.2/24"), MAC: "02:42:0a:2a:03:02",
		HostVeth: "veth-e1", PeerVeth: "peer-e1"}
	ep2 := state.Endpoint{ID: "e2", NetworkID: "aa", Address: netip.MustParsePrefix("10.42.3.3/24")}
	if _, ok, err := st.Endpoint(ctx, "e1"); err != nil || ok {
		t.Fatalf("absent endpoint: ok %v, %v", ok, err)
	}
	must(t, st.PutEndpoint(ctx, ep2))
	must(t, st.PutEndpoint(ctx, ep))
	if got, ok, err := st.Endpoint(ctx, "e1"); err != nil || !ok || got != ep {
		t.Fatalf("Endpoint(e1) = %+v %v %v", got, ok, err)
	}
	if got, err := st.Endpoints(ctx); err != nil || !slices.Equal(got, []state.Endpoint{ep, ep2}) {
		t.Fatalf("Endpoints = %+v %v", got, err)
	}
	want := map[string]any{"id": "e1", "networkID": "aa", "address": "10.42.3.2/24", "mac": "02:42:0a:2a:03:02",
		"hostVeth": "veth-e1", "peerVeth": "peer-e1"}
	if got := raw(t, s, "local/endpoints/e1"); !reflect.DeepEqual(got, want) {
		t.Fatalf("stored endpoint %v, want %v", got, want)
	}
	must(t, st.DeleteEndpoint(ctx, "e1"))
	must(t, st.DeleteEndpoint(ctx, "e1"))
	if got, err := st.Endpoints(ctx); err != nil || !slices.Equal(got, []state.Endpoint{ep2}) {
		t.Fatalf("Endpoints after delete = %+v %v", got, err)
	}
}

func TestPools(t *testing.T) {
	st, s := newStore(t)
	pool := netip.MustParsePrefix("10.42.0.0/16")
	p := state.Pool{ID: "felt/10.42.0.0/16", Pool: pool, Subnet: netip.MustParsePrefix("10.42.3.0/24"),
		Gateway: netip.MustParseAddr("10.42.3.1"), Refs: 2}
	r := state.Pool{ID: "felt/10.42.0.0/16/10.42.9.64/26", Pool: pool, Range: netip.MustParsePrefix("10.42.9.64/26"),
		Subnet: netip.MustParsePrefix("10.42.9.0/24"), Gateway: netip.MustParseAddr("10.42.9.1"), Refs: 1}
	if _, ok, err := st.Pool(ctx, p.ID); err != nil || ok {
		t.Fatalf("absent pool: ok %v, %v", ok, err)
	}
	must(t, st.PutPool(ctx, p))
	must(t, st.PutPool(ctx, r))
	if got, ok, err := st.Pool(ctx, r.ID); err != nil || !ok || got != r {
		t.Fatalf("Pool(%s) = %+v %v %v", r.ID, got, ok, err)
	}
	if got, err := st.Pools(ctx); err != nil || !slices.Equal(got, []state.Pool{p, r}) {
		t.Fatalf("Pools = %+v %v", got, err)
	}
	if got, ok, err := st.PoolOfSubnet(ctx, r.Subnet); err != nil || !ok || got.ID != r.ID {
		t.Fatalf("PoolOfSubnet(%s) = %+v %v %v", r.Subnet, got, ok, err)
	}
	if _, ok, err := st.PoolOfSubnet(ctx, netip.MustParsePrefix("10.42.4.0/24")); err != nil || ok {
		t.Fatalf("PoolOfSubnet of an unleased subnet: ok %v, %v", ok, err)
	}
	// The ID's slashes are flattened in the key; no range, no "range" field.
	want := map[string]any{"id": p.ID, "pool": "10.42.0.0/16", "subnet": "10.42.3.0/24", "gateway": "10.42.3.1", "refs": 2.0}
	if got := raw(t, s, "local/pools/felt_10.42.0.0_16"); !reflect.DeepEqual(got, want) {
		t.Fatalf("stored pool %v, want %v", got, want)
	}
	if got := raw(t, s, "local/pools/felt_10.42.0.0_16_10.42.9.64_26"); got["range"] != "10.42.9.64/26" {
		t.Fatalf("stored pool with range %v", got)
	}
	must(t, st.DeletePool(ctx, p.ID))
	must(t, st.DeletePool(ctx, p.ID))
	if got, err := st.Pools(ctx); err != nil || !slices.Equal(got, []state.Pool{r}) {
		t.Fatalf("Pools after delete = %+v %v", got, err)
	}

	// The last subnet of a pool outlives its pool records.
	if got, err := st.LastSubnet(ctx, pool); err != nil || got.IsValid() {
		t.Fatalf("LastSubnet before any = %v %v", got, err)
	}
	must(t, st.PutLastSubnet(ctx, pool, p.Subnet))
	must(t, st.DeletePool(ctx, r.ID))
	if got, err := st.LastSubnet(ctx, pool); err != nil || got != p.Subnet {
		t.Fatalf("LastSubnet = %v %v, want %s", got, err, p.Subnet)
	}
	if !slices.Contains(keys(t, s), "local/last-subnet/10.42.0.0-16") {
		t.Fatalf("last subnet stored under %v", keys(t, s))
	}
}

func TestAddresses(t *testing.T) {
	st, s := newStore(t)
	subnet := netip.MustParsePrefix("10.42.3.0/24")
	other := netip.MustParsePrefix("10.42.4.0/24")
	gw := state.Address{Addr: netip.MustParseAddr("10.42.3.1"), Kind: state.KindGateway, PoolID: "felt/10.42.0.0/16"}
	ctr := state.Address{Addr: netip.MustParseAddr("10.42.3.2"), Kind: state.KindContainer, PoolID: "felt/10.42.0.0/16"}
	old := state.Address{Addr: netip.MustParseAddr("10.42.3.3"), Kind: state.KindAux} // before PoolID existed
	for _, a := range []state.Address{gw, ctr, old} {
		if ok, err := st.CreateAddress(ctx, subnet, a); err != nil || !ok {
			t.Fatalf("CreateAddress(%s) = %v %v", a.Addr, ok, err)
		}
	}
	if ok, err := st.CreateAddress(ctx, subnet, state.Address{Addr: ctr.Addr, Kind: state.KindAux}); err != nil || ok {
		t.Fatalf("CreateAddress of a recorded address = %v %v, want false", ok, err)
	}
	must(t, st.PutCursor(ctx, subnet, ctr.Addr))
	if _, err := st.CreateAddress(ctx, other, state.Address{Addr: netip.MustParseAddr("10.42.4.2"), Kind: state.KindContainer}); err != nil {
		t.Fatal(err)
	}
	must(t, st.PutCursor(ctx, other, netip.MustParseAddr("10.42.4.2")))

	if got, ok, err := st.Address(ctx, subnet, ctr.Addr); err != nil || !ok || got != ctr {
		t.Fatalf("Address(%s) = %+v %v %v", ctr.Addr, got, ok, err)
	}
	if _, ok, err := st.Address(ctx, subnet, netip.MustParseAddr("10.42.3.9")); err != nil || ok {
		t.Fatalf("absent address: ok %v, %v", ok, err)
	}
	if got, err := st.Addresses(ctx, subnet); err != nil || !slices.Equal(got, []state.Address{gw, ctr, old}) {
		t.Fatalf("Addresses = %+v %v", got, err)
	}
	want := []netip.Addr{gw.Addr, ctr.Addr, old.Addr}
	if got, err := st.UsedAddrs(ctx, subnet); err != nil || !slices.Equal(got, want) {
		t.Fatalf("UsedAddrs = %v %v, want %v", got, err, want)
	}
	// UsedAddrs goes by the keys: a record that does not decode is taken.
	must(t, s.Put(ctx, "local/addrs/10.42.3.0-24/10.42.3.7", []byte("not json")))
	if got, err := st.UsedAddrs(ctx, subnet); err != nil || !slices.Contains(got, netip.MustParseAddr("10.42.3.7")) {
		t.Fatalf("UsedAddrs with an undecodable record = %v %v", got, err)
	}
	if _, err := st.Addresses(ctx, subnet); err == nil {
		t.Fatal("Addresses decoded a record that is not JSON")
	}
	if got := raw(t, s, "local/addrs/10.42.3.0-24/10.42.3.2"); !reflect.DeepEqual(got, map[string]any{"addr": "10.42.3.2", "kind": "container", "poolID": "felt/10.42.0.0/16"}) {
		t.Fatalf("stored address %v", got)
	}
	if got := raw(t, s, "local/addrs/10.42.3.0-24/10.42.3.3"); !reflect.DeepEqual(got, map[string]any{"addr": "10.42.3.3", "kind": "aux"}) {
		t.Fatalf("stored address without pool ID %v", got)
	}
	if got, err := st.Cursor(ctx, subnet); err != nil || got != ctr.Addr {
		t.Fatalf("Cursor = %v %v", got, err)
	}

	must(t, st.DeleteAddress(ctx, subnet, ctr.Addr))
	must(t, st.DeleteAddress(ctx, subnet, ctr.Addr))
	if _, ok, _ := st.Address(ctx, subnet, ctr.Addr); ok {
		t.Fatal("address still recorded after DeleteAddress")
	}

	// DeleteAddresses takes every record of the subnet and its cursor,
	// and nothing of another subnet.
	must(t, st.DeleteAddresses(ctx, subnet))
	if got, err := st.UsedAddrs(ctx, subnet); err != nil || len(got) != 0 {
		t.Fatalf("UsedAddrs after DeleteAddresses = %v %v", got, err)
	}
	if got, err := st.Cursor(ctx, subnet); err != nil || got.IsValid() {
		t.Fatalf("Cursor after DeleteAddresses = %v %v", got, err)
	}
	wantKeys := []string{"local/addrs/10.42.4.0-24/10.42.4.2", "local/cursor/10.42.4.0-24"}
	if got := keys(t, s); !slices.Equal(got, wantKeys) {
		t.Fatalf("keys after DeleteAddresses = %v, want %v", got, wantKeys)
	}
}

func TestEarlierHosts(t *testing.T) {
	st, s := newStore(t)
	if got, err := st.EarlierHosts(ctx); err != nil || len(got) != 0 {
		t.Fatalf("EarlierHosts of an empty store = %v %v", got, err)
	}
	must(t, st.PutEarlierHost(ctx, "bbbb"))
	must(t, st.PutEarlierHost(ctx, "aaaa"))
	must(t, st.PutEarlierHost(ctx, "aaaa"))
	if got, err := st.EarlierHosts(ctx); err != nil || !slices.Equal(got, []string{"aaaa", "bbbb"}) {
		t.Fatalf("EarlierHosts = %v %v", got, err)
	}
	if p, err := s.Get(ctx, "local/forget/aaaa"); err != nil || string(p.Value) != `"aaaa"` {
		t.Fatalf("stored %q %v", p.Value, err)
	}
	must(t, st.DeleteEarlierHost(ctx, "aaaa"))
	must(t, st.DeleteEarlierHost(ctx, "aaaa"))
	if got, err := st.EarlierHosts(ctx); err != nil || !slices.Equal(got, []string{"bbbb"}) {
		t.Fatalf("EarlierHosts after delete = %v %v", got, err)
	}
}

// A record that does not decode is an error naming its key, not a zero
// value: a corrupt state must not read as "absent".
func TestUndecodableRecord(t *testing.T) {
	st, s := newStore(t)
	must(t, s.Put(ctx, "local/networks/aa", []byte("{")))
	if _, _, err := st.Network(ctx, "aa"); err == nil || !strings.Contains(err.Error(), "local/networks/aa") {
		t.Fatalf("Network of a corrupt record: %v", err)
	}
	if _, err := st.Networks(ctx); err == nil || !strings.Contains(err.Error(), "local/networks/aa") {
		t.Fatalf("Networks with a corrupt record: %v", err)
	}
}
