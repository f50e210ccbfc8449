package overlay_test

import (
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/internal/testnet"
	"github.com/felt-net/felt/overlay"
)

// A felt whose state directory was wiped removes the overlay devices of its
// earlier instance, keeping those of another felt sharing the namespace and
// its own. Its own instance and malformed ones are refused.
func TestForgetInstanceRemovesOnlyThatInstancesDevices(t *testing.T) {
	ns := testnet.New(t, "ov")
	devices := map[string]string{ // name: owner mark
		"felt.7":     overlay.OwnerAlias("0a1b2c3d", "net-old"),
		"feltu.0a2a": overlay.OwnerAlias("0a1b2c3d", "net-old2"),
		"felt.8":     overlay.OwnerAlias("4e5f6a7b", "net-other"),
		"felt.9":     overlay.OwnerAlias("99aabbcc", "net-cur"),
		"felt.10":    "",
	}
	for name, alias := range devices {
		l := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := ns.NL.LinkAdd(l); err != nil {
			t.Fatalf("bridge %s: %v", name, err)
		}
		if alias != "" {
			if err := ns.NL.LinkSetAlias(l, alias); err != nil {
				t.Fatalf("alias of %s: %v", name, err)
			}
		}
	}
	m := overlay.NewManager(overlay.ManagerConfig{Netlink: ns.NL, HostID: "99aabbcc00000000"})
	t.Cleanup(m.Close)
	if err := m.ForgetInstance("0a1b2c3d"); err != nil {
		t.Fatal(err)
	}
	if err := m.ForgetInstance("0a1b2c3d"); err != nil {
		t.Fatalf("a second ForgetInstance: %v", err)
	}
	for _, bad := range []string{"99aabbcc", "", "4e5f6a7", "4E5F6A7B", "4e5f6a7b:overlay:", ".*"} {
		if err := m.ForgetInstance(bad); err == nil {
			t.Errorf("ForgetInstance(%q) did not fail", bad)
		}
	}
	for name, alias := range devices {
		_, err := ns.NL.LinkByName(name)
		gone := err != nil
		if want := alias != "" && alias[:13] == "felt:0a1b2c3d"; gone != want {
			t.Errorf("device %s (mark %q): gone = %v, want %v", name, alias, gone, want)
		}
	}
}
