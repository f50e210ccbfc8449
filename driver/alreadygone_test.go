package driver

import (
	"log/slog"
	"testing"

	api "github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/testkit"
)

// A link that vanishes between felt's lookup and its delete counts as
// deleted (issue 14: under load, a DeleteEndpoint answered HTTP 500 "link
// fv…: delete: no such device"). The kernel deletes a veth pair whole when
// either end goes, as when a container's namespace goes; Docker's cleanup
// or someone by hand may remove a bridge or a VTEP. These tests delete the
// link in deleteLink's window, through beforeLinkDel.

// goneUnderneath makes e's driver find each link it deletes already gone:
// del removes it first, as the kernel or another actor would. It returns
// how many links were taken so.
func goneUnderneath(t *testing.T, e *env, del func(netlink.Link)) *int {
	t.Helper()
	n := new(int)
	e.d.beforeLinkDel = func(l netlink.Link) {
		del(l)
		*n++
	}
	t.Cleanup(func() { e.d.beforeLinkDel = nil })
	return n
}

func TestDeleteEndpointWhosePairVanished(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("aa", 'a'), "10.70.0.0/16")
	epID := id("ee", '1')
	ctr := e.endpoint(t, n, epID)
	_, peer := vethNames(epID)
	// The container end goes (its namespace is torn down): the kernel
	// takes the host end along, after the driver looked it up.
	taken := goneUnderneath(t, e, func(netlink.Link) {
		must(t, ctr.NL.LinkDel(ctr.Link(t, peer)))
	})
	if err := e.d.DeleteEndpoint(ctx, &api.DeleteEndpointRequest{NetworkID: n.ID, EndpointID: epID}); err != nil {
		t.Fatalf("DeleteEndpoint of an endpoint whose pair vanished: %v", err)
	}
	if *taken != 1 {
		t.Fatalf("the pair was taken away %d times, want once: the test did not hit the window", *taken)
	}
	if _, found, err := e.d.cfg.State.Endpoint(ctx, epID); err != nil || found {
		t.Fatalf("endpoint record left after DeleteEndpoint (found %v, err %v)", found, err)
	}
	host, _ := vethNames(epID)
	if l := link(t, e.host, host); l != nil {
		t.Fatalf("veth %s still there", host)
	}
}

func TestDeleteNetworkWhoseBridgeVanished(t *testing.T) {
	e := newEnv(t)
	logs := &testkit.LogBuffer{}
	e.d.cfg.Log = slog.New(slog.NewTextHandler(logs, nil))
	n := e.network(t, id("bb", 'b'), "10.71.0.0/16")
	taken := goneUnderneath(t, e, func(l netlink.Link) { must(t, e.host.NL.LinkDel(l)) })
	if err := e.d.DeleteNetwork(ctx, &api.DeleteNetworkRequest{NetworkID: n.ID}); err != nil {
		t.Fatalf("DeleteNetwork of a network whose bridge vanished: %v", err)
	}
	if *taken != 1 {
		t.Fatalf("the bridge was taken away %d times, want once", *taken)
	}
	e.wantNetworks(t, 0, "DeleteNetwork")
	if logs.Contains("level=WARN") || logs.Contains("level=ERROR") {
		t.Fatalf("a bridge already gone was reported as a failure:\n%s", logs)
	}
}

// Recover removes orphaned links; one that goes meanwhile is removed.
func TestRecoverOrphanThatVanished(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("cc", 'c'), "10.72.0.0/16")
	epID := id("ee", '2')
	ctr := e.endpoint(t, n, epID)
	// The endpoint's record is gone (a delete Docker sent while felt was
	// down): its veth is an orphan for Recover.
	must(t, e.d.cfg.State.DeleteEndpoint(ctx, epID))
	_, peer := vethNames(epID)
	taken := goneUnderneath(t, e, func(netlink.Link) {
		must(t, ctr.NL.LinkDel(ctr.Link(t, peer)))
	})
	if err := e.d.Recover(ctx); err != nil {
		t.Fatalf("Recover with an orphaned veth that vanished: %v", err)
	}
	if *taken != 1 {
		t.Fatalf("the orphan was taken away %d times, want once: Recover did not delete it through deleteLink", *taken)
	}
}
