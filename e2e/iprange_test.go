package e2e

import (
	"net/netip"
	"strings"
	"testing"
)

// Issue 15, defect 2, through the real engine: with a felt network on a
// pool and a running container, `docker network create` for the same
// pool with an --ip-range inside this host's subnet is refused (one felt
// network per pool), and Docker then releases that pool request. The
// release must not free the running container's address (nor the
// gateway): a new container gets another address, and both ping.
func TestIPRangeRefusalKeepsLiveAddresses(t *testing.T) {
	const pool = "10.71.0.0/16"
	network(t, "felt-range", "--subnet", pool)
	liveIP := container(t, "felt-range-live", "felt-range")
	live, err := netip.ParseAddr(liveIP)
	if err != nil {
		t.Fatalf("container address %q: %v", liveIP, err)
	}
	subnet := netip.PrefixFrom(live, 24).Masked() // this host's /24 of the pool
	gateway := subnet.Addr().Next()
	rng := netip.PrefixFrom(live, 25).Masked() // holds the live address

	args := []string{"network", "create", "-d", plugin, "--ipam-driver", plugin, "--label", label,
		"--subnet", pool, "--ip-range", rng.String(), "felt-range2"}
	out, err := docker(args...)
	if err == nil {
		_, _ = docker("network", "rm", "felt-range2")
		t.Fatalf("a second felt network on %s was created; want it refused (one felt network per pool)", pool)
	}
	if !strings.Contains(out, "already used by felt network") && !strings.Contains(out, "one Docker network per pool") {
		t.Fatalf("second network refused for another reason than the pool in use (felt's IPAM not reached?):\n%s", out)
	}

	newIP := container(t, "felt-range-new", "felt-range")
	if n, _ := netip.ParseAddr(newIP); n == live || n == gateway {
		t.Fatalf("new container got %s after the refused --ip-range network: in use (live container %s, gateway %s)", newIP, live, gateway)
	}
	if out, err := docker("exec", "felt-range-new", "ping", "-c", "1", "-W", "2", liveIP); err != nil {
		t.Fatalf("new container cannot reach the live one at %s: %v\n%s", liveIP, err, out)
	}
	if out, err := docker("exec", "felt-range-live", "ping", "-c", "1", "-W", "2", newIP); err != nil {
		t.Fatalf("live container cannot reach the new one at %s: %v\n%s", newIP, err, out)
	}
}

// Issue 15, defect 1, through the real engine: pools that cannot be a
// container network are refused with felt's reason, and leave nothing
// behind: a normal network on a pool they contain works afterwards (the
// 0.0.0.0/0 record used to make every later pool "overlap" it).
func TestUnusablePoolsRefusedThroughDocker(t *testing.T) {
	hostNet := netip.MustParsePrefix(hostAddr(t) + "/32")
	cases := []struct{ subnet, want string }{
		{"0.0.0.0/0", "is the default route"},
		{"10.0.0.0/7", "is too large"},
		{"127.42.0.0/16", "overlaps the loopback range"},
		{"224.1.0.0/16", "overlaps the multicast range"},
		{"240.0.0.0/16", "overlaps the reserved range"},
		{netip.PrefixFrom(hostNet.Addr(), 30).Masked().String(), "the network of this host's interface"},
	}
	for _, c := range cases {
		out, err := docker("network", "create", "-d", plugin, "--ipam-driver", plugin, "--label", label, "--subnet", c.subnet, "felt-unusable")
		if err == nil {
			_, _ = docker("network", "rm", "felt-unusable")
			t.Fatalf("--subnet %s: network created, want it refused (%q)", c.subnet, c.want)
		}
		if !strings.Contains(out, c.want) {
			t.Fatalf("--subnet %s: error %q, want it to contain %q", c.subnet, out, c.want)
		}
	}
	network(t, "felt-after-unusable", "--subnet", "10.72.0.0/16")
	ip := container(t, "felt-after-unusable-a", "felt-after-unusable")
	if out, err := ping("felt-after-unusable", ip); err != nil {
		t.Fatalf("ping %s on a network created after the refusals: %v\n%s", ip, err, out)
	}
}
