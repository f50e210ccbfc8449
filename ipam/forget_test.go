package ipam_test

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// forgetEnv is a felt whose state directory was wiped: a registry holding
// the leases of its earlier felt (hostID earlierID, the same public IP),
// and a new IPAM driver (hostID newID) whose ForgetHost is recorded and
// answers forgetErr.
type forgetEnv struct {
	d         *ipam.Driver
	st        *state.Store
	reg       *lease.Registry
	mu        sync.Mutex
	forgot    []string
	forgetErr error
}

const (
	earlierID = "0a1b2c3d0a1b2c3d0a1b2c3d0a1b2c3d"
	newID     = "99aabbcc99aabbcc99aabbcc99aabbcc"
)

var publicIP = netip.MustParseAddr("192.0.2.1")

func newForgetEnv(t *testing.T) *forgetEnv {
	t.Helper()
	dir := t.TempDir()
	shared := openKV(t, filepath.Join(dir, "shared.db"))
	local := openKV(t, filepath.Join(dir, "local.db"))
	e := &forgetEnv{reg: lease.NewRegistry(shared, "felt/", nil), st: state.New(local)}
	e.d = ipam.New(ipam.Config{
		State: e.st, Registry: e.reg, HostID: newID,
		Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
			return lease.Owner{HostID: newID, PublicIP: publicIP}, nil
		},
		ForgetHost: func(_ context.Context, hostID string) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.forgot = append(e.forgot, hostID)
			return e.forgetErr
		},
	})
	return e
}

// leaseOf gives hostID a lease in pool with this host's public IP, as the
// earlier felt held it.
func (e *forgetEnv) leaseOf(t *testing.T, pool, hostID string) lease.Lease {
	t.Helper()
	n, err := e.reg.ReservePool(ctx, netip.MustParsePrefix(pool), 24)
	if err != nil {
		t.Fatal(err)
	}
	l, err := e.reg.Acquire(ctx, lease.AcquireRequest{Network: n, Owner: lease.Owner{HostID: hostID, PublicIP: publicIP}})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (e *forgetEnv) calls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.forgot)
}

// RequestPool over a lease of an earlier felt of this host (same public
// IP, another host ID) has that felt's leftovers removed before it
// returns, so before CreateNetwork makes the new bridge; once only.
func TestRequestPoolForgetsEarlierFelt(t *testing.T) {
	e := newForgetEnv(t)
	old := e.leaseOf(t, "10.42.0.0/16", earlierID)
	resp, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Pool != old.Subnet.String() {
		t.Fatalf("pool %s, want the earlier felt's subnet %s taken over", resp.Pool, old.Subnet)
	}
	if got := e.calls(); !slices.Equal(got, []string{earlierID}) {
		t.Fatalf("ForgetHost calls %q, want exactly [%s]", got, earlierID)
	}
	// Done: another pool without such a lease forgets nothing more.
	if _, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.43.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	if got := e.calls(); len(got) != 1 {
		t.Fatalf("ForgetHost calls %q after a second pool, want still one", got)
	}
}

// A removal that fails refuses the pool with its reason, and is retried
// (from the local record) at the next RequestPool, even once the lease that
// proved the earlier felt is gone.
func TestRequestPoolRetriesFailedForget(t *testing.T) {
	e := newForgetEnv(t)
	old := e.leaseOf(t, "10.42.0.0/16", earlierID)
	e.forgetErr = errors.New("link busy")
	_, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"})
	if err == nil || !strings.Contains(err.Error(), "link busy") || !strings.Contains(err.Error(), earlierID) {
		t.Fatalf("RequestPool error = %v, want the removal's failure naming host ID %s", err, earlierID)
	}
	if pools, _ := e.st.Pools(ctx); len(pools) != 0 {
		t.Fatalf("refused RequestPool recorded %+v", pools)
	}
	// The lease goes (it expired, say): the record alone remembers.
	if err := e.reg.Release(ctx, old.Pool, old.Subnet, earlierID); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.forgetErr, e.forgot = nil, nil
	e.mu.Unlock()
	if _, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	if got := e.calls(); !slices.Equal(got, []string{earlierID}) {
		t.Fatalf("ForgetHost calls %q, want the failed one retried: [%s]", got, earlierID)
	}
}

// A lease of this host's public IP whose host ID is not one felt makes (the
// shared store is not trusted) is taken over as before, but never names
// anything to forget.
func TestRequestPoolForgetsNoMalformedHostID(t *testing.T) {
	for _, bad := range []string{"host-b", "0A1B2C3D0A1B2C3D", "0a1b2c3", "../../x", "0a1b2c3d:net:"} {
		t.Run(bad, func(t *testing.T) {
			e := newForgetEnv(t)
			e.leaseOf(t, "10.42.0.0/16", bad)
			if _, err := e.d.RequestPool(ctx, &api.RequestPoolRequest{Pool: "10.42.0.0/16"}); err != nil {
				t.Fatal(err)
			}
			if got := e.calls(); len(got) != 0 {
				t.Fatalf("ForgetHost calls %q for host ID %q", got, bad)
			}
		})
	}
}
