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
