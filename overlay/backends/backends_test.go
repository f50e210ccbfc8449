package backends_test

import (
	"slices"
	"testing"

	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/backends"
)

// The registry felt runs with (plugin.Build uses All): every backend is
// there under its name, vxlan is the default, and each describes the
// options it takes and its overhead as the driver and lease expect.
func TestAllBackendsRegistered(t *testing.T) {
	reg := backends.All(overlay.BackendConfig{HostID: "h"})
	if got, want := reg.Names(), []string{"vxlan", "host-gw", "udp", "wireguard"}; !slices.Equal(got, want) {
		t.Fatalf("registered %v, want %v", got, want)
	}
	if reg.Default() != "vxlan" {
		t.Fatalf("default %q, want vxlan", reg.Default())
	}
	want := map[string]struct {
		overhead int
		options  overlay.Options
	}{
		"vxlan":   {50, overlay.Options{VNI: true, DirectRouting: true}},
		"host-gw": {0, overlay.Options{}},
		"udp":     {28, overlay.Options{DefaultPort: 8285}},
	}
	for name, w := range want {
		b, err := reg.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if b.Name() != name || b.Overhead() != w.overhead || b.Options() != w.options {
			t.Errorf("%s: name %q, overhead %d, options %+v; want overhead %d, options %+v",
				name, b.Name(), b.Overhead(), b.Options(), w.overhead, w.options)
		}
	}
	if _, err := reg.Get("gre"); err == nil {
		t.Error("an unregistered backend is found")
	}
}
