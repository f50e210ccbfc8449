package driver

import (
	"strings"
	"testing"

	"github.com/felt-net/felt/testkit/netns"
)

// A felt whose state directory was wiped forgets its earlier instance:
// that instance's bridge and veths (the container end going along) are
// removed, while the links of another felt sharing the namespace and its
// own stay. Refused: its own instance, and anything not shaped like an
// instance (it comes from the shared store).
func TestForgetInstanceRemovesOnlyThatInstancesLinks(t *testing.T) {
	host := netns.New(t, "host")
	old := newEnvIn(t, host, "0a1b2c3d")   // the earlier incarnation
	other := newEnvIn(t, host, "4e5f6a7b") // a second felt on the host
	cur := newEnvIn(t, host, "99aabbcc")   // the felt after the wipe

	oldNet := old.network(t, id("01", 'a'), "10.61.0.0/16")
	oldCtr := old.endpoint(t, oldNet, id("01", 'b'))
	otherNet := other.network(t, id("02", 'a'), "10.62.0.0/16")
	otherCtr := other.endpoint(t, otherNet, id("02", 'b'))
	curNet := cur.network(t, id("03", 'a'), "10.63.0.0/16")
	cur.endpoint(t, curNet, id("03", 'b'))
	oldVeth, _ := vethNames(id("01", 'b'))
	if link(t, host, BridgeName(oldNet.ID)) == nil || link(t, host, oldVeth) == nil {
		t.Fatal("the earlier instance's links are missing before the test")
	}

	must(t, cur.d.ForgetInstance(ctx, "0a1b2c3d"))

	if l := link(t, host, BridgeName(oldNet.ID)); l != nil {
		t.Errorf("the earlier instance's bridge %s stays (alias %q)", l.Attrs().Name, l.Attrs().Alias)
	}
	if l := link(t, host, oldVeth); l != nil {
		t.Errorf("the earlier instance's veth %s stays (alias %q)", l.Attrs().Name, l.Attrs().Alias)
	}
	if l, _ := oldCtr.NL.LinkByName("eth0"); l != nil {
		t.Errorf("the earlier instance's container keeps its interface")
	}
	for _, n := range []struct {
		net, ep string
		ctr     *netns.NS
	}{{id("02", 'a'), id("02", 'b'), otherCtr}, {id("03", 'a'), id("03", 'b'), nil}} {
		if link(t, host, BridgeName(n.net)) == nil {
			t.Errorf("bridge %s of another instance was removed", BridgeName(n.net))
		}
		if v, _ := vethNames(n.ep); link(t, host, v) == nil {
			t.Errorf("veth %s of another instance was removed", v)
		}
	}

	// Idempotent: nothing left to remove is no error.
	must(t, cur.d.ForgetInstance(ctx, "0a1b2c3d"))

	wantErr(t, cur.d.ForgetInstance(ctx, "99aabbcc"), "99aabbcc", "own")
	for _, bad := range []string{"", "0a1b2c3", "0A1B2C3D", "4e5f6a7b:", "4e5f6a7", ":net:4e5f", "*", "4e5f6a7b4e5f6a7b", strings.Repeat("x", 1<<16)} {
		err := cur.d.ForgetInstance(ctx, bad)
		wantErr(t, err, "8 lowercase hex")
		if len(err.Error()) > 300 {
			t.Errorf("error of %d bytes for a hostile instance", len(err.Error()))
		}
	}
	if link(t, host, BridgeName(otherNet.ID)) == nil || link(t, host, BridgeName(curNet.ID)) == nil {
		t.Fatal("a refused ForgetInstance removed a bridge")
	}
}
