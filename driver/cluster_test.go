package driver

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	api "github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"
)

// recordingCluster is a Cluster that records its calls; deleteErr fails
// Deleted.
type recordingCluster struct {
	created, deleted []string
	pools            []netip.Prefix
	deleteErr        error
}

func (c *recordingCluster) Created(id string) { c.created = append(c.created, id) }

func (c *recordingCluster) Deleted(_ context.Context, id string, pool netip.Prefix) error {
	c.deleted = append(c.deleted, id)
	c.pools = append(c.pools, pool)
	return c.deleteErr
}

// The cluster is told of creations, and of removals before anything is
// removed: if it cannot record the removal, the network stays (Docker keeps
// it too), rather than the cluster making it again on this host later.
func TestClusterHooks(t *testing.T) {
	e := newEnv(t)
	c := &recordingCluster{}
	e.d.cfg.Cluster = c
	n := e.network(t, id("aa", 'a'), "10.62.0.0/16")
	if len(c.created) != 1 || c.created[0] != n.ID {
		t.Fatalf("Created calls %v", c.created)
	}
	c.deleteErr = errors.New("disk full")
	err := e.d.DeleteNetwork(ctx, &api.DeleteNetworkRequest{NetworkID: n.ID})
	wantErr(t, err, "disk full")
	if _, err := e.host.NL.LinkByName(BridgeName(n.ID)); err != nil {
		t.Fatalf("bridge removed although the removal failed: %v", err)
	}
	if _, ok, _ := e.d.cfg.State.Network(ctx, n.ID); !ok {
		t.Fatalf("record removed although the removal failed")
	}
	c.deleteErr = nil
	must(t, e.d.DeleteNetwork(ctx, &api.DeleteNetworkRequest{NetworkID: n.ID}))
	if len(c.deleted) != 2 || c.pools[1] != netip.MustParsePrefix("10.62.0.0/16") {
		t.Fatalf("Deleted calls %v %v", c.deleted, c.pools)
	}
	if _, err := e.host.NL.LinkByName(BridgeName(n.ID)); !errors.As(err, &netlink.LinkNotFoundError{}) {
		t.Fatalf("bridge left: %v", err)
	}
	// Unknown networks are not the cluster's business.
	must(t, e.d.DeleteNetwork(ctx, &api.DeleteNetworkRequest{NetworkID: id("bb", 'b')}))
	if len(c.deleted) != 2 {
		t.Fatalf("Deleted called for an unknown network")
	}
}

// -o scope=cluster where cluster networks are off is refused, naming why.
func TestScopeClusterNeedsCluster(t *testing.T) {
	e := newEnv(t)
	p, err := e.ipam.RequestPool(ctx, ipamPool("10.63.0.0/16"))
	must(t, err)
	err = e.d.CreateNetwork(ctx, &api.CreateNetworkRequest{NetworkID: id("cc", 'c'),
		Options:  map[string]any{optGeneric: map[string]any{"scope": "cluster"}},
		IPv4Data: []*api.IPAMData{{Pool: p.Pool, Gateway: p.Data["com.docker.network.gateway"]}}})
	wantErr(t, err, "scope=cluster", "CONSUL_HTTP_ADDR", "FELT_DOCKER_HOST")
	e.d.cfg.Cluster = &recordingCluster{}
	must(t, e.d.CreateNetwork(ctx, &api.CreateNetworkRequest{NetworkID: id("cc", 'c'),
		Options:  map[string]any{optGeneric: map[string]any{"scope": "cluster"}},
		IPv4Data: []*api.IPAMData{{Pool: p.Pool, Gateway: p.Data["com.docker.network.gateway"]}}}))
}
