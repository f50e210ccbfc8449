package overlay_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/vxlan"
	"github.com/felt-net/felt/testkit/netns"
)

// A felt whose state directory was wiped removes the overlay devices of its
// earlier instance, keeping those of another felt sharing the namespace and
// its own. Its own instance and malformed ones are refused.
func TestForgetInstanceRemovesOnlyThatInstancesDevices(t *testing.T) {
	ns := netns.New(t, "ov")
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

// adopting is a vxlan backend whose Setup is reduced to what matters here:
// it takes the device of n's name over (as ensureVTEP does with a matching
// VTEP left by an earlier run), marking it n's, once the test releases it.
type adopting struct {
	overlay.Backend
	nl               *netlink.Handle
	instance         string
	entered, release chan struct{}
}

func (a *adopting) Setup(ctx context.Context, n overlay.Network) error {
	close(a.entered)
	<-a.release
	l, err := a.nl.LinkByName(vxlan.VTEPName(n.VNI))
	if err != nil {
		return err
	}
	return a.nl.LinkSetAlias(l, overlay.OwnerAlias(a.instance, n.ID))
}

func (a *adopting) Sync(context.Context, overlay.Network, []lease.Lease) error { return nil }
func (a *adopting) Teardown(context.Context, overlay.Network) error            { return nil }

// ForgetInstance running while an Attach takes the earlier felt's device
// over (the same VNI: the network record in the shared store outlived the
// state directory) leaves the device to the Attach: it listed the device
// as the earlier felt's and deleted it after the Attach had made it the
// new network's, cutting that network off until a resync.
func TestForgetInstanceSparesDeviceBeingAdopted(t *testing.T) {
	ns := netns.New(t, "ov")
	l := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: vxlan.VTEPName(7)}}
	if err := ns.NL.LinkAdd(l); err != nil {
		t.Fatal(err)
	}
	if err := ns.NL.LinkSetAlias(l, overlay.OwnerAlias("0a1b2c3d", "net-old")); err != nil {
		t.Fatal(err)
	}
	b := &adopting{Backend: vxlan.New(overlay.BackendConfig{Netlink: ns.NL}), nl: ns.NL, instance: "99aabbcc", entered: make(chan struct{}), release: make(chan struct{})}
	m := overlay.NewManager(overlay.ManagerConfig{Netlink: ns.NL, HostID: "99aabbcc00000000",
		Backends: overlay.NewBackends(b)})
	t.Cleanup(m.Close)
	n := overlay.Network{ID: "net-new", Backend: "vxlan", VNI: 7,
		Pool: netip.MustParsePrefix("10.42.0.0/16"), Subnet: netip.MustParsePrefix("10.42.3.0/24")}
	attached := make(chan error, 1)
	go func() { attached <- m.Attach(context.Background(), n) }()
	<-b.entered // the Attach is under way, the device still marked the earlier felt's
	forgot := make(chan error, 1)
	go func() { forgot <- m.ForgetInstance("0a1b2c3d") }()
	time.Sleep(200 * time.Millisecond) // let ForgetInstance get as far as it goes
	close(b.release)
	if err := <-attached; err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if err := <-forgot; err != nil {
		t.Fatalf("ForgetInstance: %v", err)
	}
	got, err := ns.NL.LinkByName(vxlan.VTEPName(7))
	if err != nil {
		t.Fatalf("the device the new network adopted was deleted: %v", err)
	}
	if a := got.Attrs().Alias; a != overlay.OwnerAlias("99aabbcc", n.ID) {
		t.Fatalf("device mark %q", a)
	}
}
