package driver

import (
	"testing"
)

// An endpoint whose network record is gone (DeleteNetwork carries on past
// an endpoint it could not remove, then deletes the network's record) is an
// orphan at start-up like a veth without a record: Recover removes its veth
// and its record. It kept both for good: the record made the veth "known".
func TestRecoverRemovesEndpointsOfGoneNetworks(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("aa", 'a'), "10.64.0.0/16")
	keep := e.network(t, id("bb", 'b'), "10.65.0.0/16")
	epID, keepID := id("cc", 'c'), id("dd", 'd')
	ctr := e.endpoint(t, n, epID)
	kept := e.endpoint(t, keep, keepID)
	must(t, e.d.cfg.State.DeleteNetwork(ctx, n.ID))
	must(t, e.d.Recover(ctx))
	host, peer := vethNames(epID)
	if link(t, e.host, host) != nil || link(t, ctr, peer) != nil {
		t.Fatal("the veth of an endpoint whose network is gone survived Recover")
	}
	if _, found, err := e.d.cfg.State.Endpoint(ctx, epID); err != nil || found {
		t.Fatalf("its record: found %v, %v", found, err)
	}
	khost, kpeer := vethNames(keepID)
	if link(t, e.host, khost) == nil || link(t, kept, kpeer) == nil {
		t.Fatal("the veth of a live endpoint was removed")
	}
}

// A bridge that went while felt was down (deleted by hand, or by a script
// cleaning felt-* links) is made again by Recover, with its endpoints'
// veths on it again: the kernel took them off the bridge as it went, and
// Recover left them loose, so running containers stayed cut off.
func TestRecoverPutsVethsBackOnRecreatedBridge(t *testing.T) {
	e := newEnv(t)
	n := e.network(t, id("aa", 'a'), "10.69.0.0/16")
	epID := id("cc", 'c')
	e.endpoint(t, n, epID)
	must(t, e.host.NL.LinkDel(link(t, e.host, BridgeName(n.ID))))
	must(t, e.d.Recover(ctx))
	br := link(t, e.host, BridgeName(n.ID))
	if br == nil {
		t.Fatal("bridge not made again")
	}
	host, _ := vethNames(epID)
	v := link(t, e.host, host)
	if v == nil {
		t.Fatal("host end of the veth gone")
	}
	if v.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatalf("veth %s is not on the bridge again (master %d, bridge %d)", host, v.Attrs().MasterIndex, br.Attrs().Index)
	}
}
