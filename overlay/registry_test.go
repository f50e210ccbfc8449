package overlay_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/backends"
	"github.com/felt-net/felt/overlay/vxlan"
	"github.com/felt-net/felt/overlay/wireguard"
)

// publishing is a backend that publishes the given lease data.
type publishing struct {
	overlay.Backend
	name string
	data map[string]any
}

func (p publishing) Name() string { return p.name }
func (p publishing) LeaseData(netip.Prefix) any {
	if p.data == nil {
		return nil
	}
	return p.data
}
func (p publishing) Options() overlay.Options { return overlay.Options{} }

// badData publishes an array, which cannot be flattened into a lease.
type badData struct{ publishing }

func (badData) Name() string               { return "bad" }
func (badData) LeaseData(netip.Prefix) any { return []int{1} }

// The owner's lease carries the data of every backend, since the lease is
// taken before the network's backend is known: today vxlan's VTEP MAC and
// wireguard's public key.
func TestLeaseDataMergesEveryBackend(t *testing.T) {
	reg := backends.All(overlay.BackendConfig{HostID: "host-a"})
	data, err := reg.LeaseData(pool)
	if err != nil {
		t.Fatal(err)
	}
	wg, err := reg.Get(wireguard.Name)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := wg.(*wireguard.Backend).PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"vtepMAC":"` + vxlan.VtepMAC("host-a", pool).String() + `","wgPublicKey":"` + pub.String() + `"}`; string(data) != want {
		t.Fatalf("lease data %s, want %s", data, want)
	}
	two := overlay.NewBackends(publishing{name: "a", data: map[string]any{"x": 1}}, publishing{name: "b", data: map[string]any{"y": "z"}})
	if data, err := two.LeaseData(pool); err != nil || string(data) != `{"x":1,"y":"z"}` {
		t.Fatalf("merged %s, %v", data, err)
	}
	if _, err := overlay.NewBackends(publishing{name: "a", data: map[string]any{}}, badData{}).LeaseData(pool); err == nil ||
		!strings.Contains(err.Error(), "backend bad: lease data: [1] is not a JSON object") {
		t.Fatalf("data that is not an object: %v", err)
	}
	none := overlay.NewBackends(publishing{name: "a"})
	if data, err := none.LeaseData(pool); err != nil || data != nil {
		t.Fatalf("no data: %s, %v", data, err)
	}
}

func TestLeaseDataKeyCollisionsRefused(t *testing.T) {
	clash := overlay.NewBackends(publishing{name: "a", data: map[string]any{"k": 1}}, publishing{name: "b", data: map[string]any{"k": 2}})
	if _, err := clash.LeaseData(pool); err == nil || !strings.Contains(err.Error(), `backends a and b both publish lease data key "k"`) {
		t.Fatalf("two backends, one key: %v", err)
	}
	own := overlay.NewBackends(publishing{name: "a", data: map[string]any{"subnet": "x"}})
	if _, err := own.LeaseData(pool); err == nil || !strings.Contains(err.Error(), `"subnet" is one of the lease record's own`) {
		t.Fatalf("a lease key: %v", err)
	}
}

// The registry is what lease learns the backends' needs from.
func TestRegistryDescribesBackendsToLease(t *testing.T) {
	reg := backends.All(overlay.BackendConfig{})
	if reg.Default() != "vxlan" || !reg.NeedsVNI("vxlan") || reg.NeedsVNI("udp") || reg.NeedsVNI("nope") ||
		reg.DefaultPort("udp") != 8285 || reg.DefaultPort("vxlan") != 0 {
		t.Fatalf("default %q, VNI vxlan %v udp %v, port udp %d vxlan %d", reg.Default(), reg.NeedsVNI("vxlan"),
			reg.NeedsVNI("udp"), reg.DefaultPort("udp"), reg.DefaultPort("vxlan"))
	}
	if o, err := reg.Overhead("udp"); err != nil || o != 28 {
		t.Fatalf("udp overhead %d, %v", o, err)
	}
	if _, err := reg.Overhead("gre"); err == nil {
		t.Fatal("overhead of an unknown backend: no error")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a backend registered twice: no panic")
		}
	}()
	overlay.NewBackends(publishing{name: "a"}, publishing{name: "a"})
}
