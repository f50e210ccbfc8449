package names

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/state"
)

// A query's scope: every felt network of the asking container's sandbox;
// internal-only when they all are --internal and Docker shows no other.
func TestStateScope(t *testing.T) {
	ctx := context.Background()
	db, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := state.New(db)
	for _, n := range []state.Network{{ID: "nblue", Pool: blue, Internal: true}, {ID: "nred", Pool: red, Internal: true}} {
		if err := st.PutNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, ep := range []state.Endpoint{
		{ID: "e1", NetworkID: "nblue", Address: netip.MustParsePrefix("10.42.1.2/24"), SandboxKey: "sb1", DNSRoute: true},
		{ID: "e2", NetworkID: "nred", Address: netip.MustParsePrefix("10.43.1.2/24"), SandboxKey: "sb1"},
		{ID: "e3", NetworkID: "nred", Address: netip.MustParsePrefix("10.43.1.3/24"), SandboxKey: "sb2", DNSRoute: true},
	} {
		if err := st.PutEndpoint(ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	nonFelt := map[string]bool{"sb1": false, "sb2": true}
	s := StateScope{State: st, NonFelt: func(sb string) (bool, bool) { v, ok := nonFelt[sb]; return v, ok }}
	for _, tc := range []struct {
		src   string
		pools []netip.Prefix
		felt  bool
		intl  bool
	}{
		{"10.43.1.2", []netip.Prefix{blue, red}, true, true}, // both networks of sb1, both internal, nothing else
		{"10.43.1.3", []netip.Prefix{red}, true, false},      // sb2 has a non-felt network too
		{"172.17.0.2", nil, false, false},                    // no felt endpoint
	} {
		got, err := s.Of(ctx, netip.MustParseAddr(tc.src))
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got.Pools, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		if !slices.Equal(got.Pools, tc.pools) || got.Felt != tc.felt || got.InternalOnly != tc.intl {
			t.Errorf("Of(%s) = %+v, want pools %v felt %v internal-only %v", tc.src, got, tc.pools, tc.felt, tc.intl)
		}
	}
	// Unknown to Docker (no publisher pass yet): forwarded, not refused.
	s.NonFelt = func(string) (bool, bool) { return false, false }
	if got, _ := s.Of(ctx, netip.MustParseAddr("10.42.1.2")); got.InternalOnly {
		t.Error("internal-only without Docker's word")
	}
}
