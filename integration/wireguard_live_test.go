package integration

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/hosts"
)

// Host 2's key file replaced while felt runs (rotation): its lease gets
// the new public key without a restart, its device the new private key,
// the other hosts replace its old key, and traffic flows.
func TestWireGuardKeyRotationLive(t *testing.T) {
	c := newWGCluster(t, 2, "FELT_RESYNC_INTERVAL=5s")
	pool := netip.MustParsePrefix("10.46.0.0/16")
	ctrs := wgPair(t, c, pool.String(), wgOpts)
	h2 := c.Hosts[1]
	subnet := ctrs[1].Net.Subnet
	old := leaseKeys(t, c, pool)[subnet]
	testkit.WaitFor(t, "traffic", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	next, _ := wgtypes.GeneratePrivateKey()
	tmp := filepath.Join(h2.Dir, "new.key")
	testkit.Must(t, os.WriteFile(tmp, []byte(next.String()+"\n"), 0o600))
	testkit.Must(t, os.Rename(tmp, filepath.Join(h2.Dir, "wireguard.key")))
	start := time.Now()
	now := next.PublicKey().String()
	testkit.WaitFor(t, "host 2's lease with the new key", func() bool { return leaseKeys(t, c, pool)[subnet] == now })
	testkit.WaitFor(t, "host 1 has host 2's new key, not the old one", func() bool {
		k := peerKeys(t, c.Hosts[0], pool)
		return slices.Contains(k, now) && !slices.Contains(k, old)
	})
	testkit.WaitFor(t, "host 2's device has the new key", func() bool { return wgStatusOf(t, h2, pool).PublicKey == now })
	testkit.WaitFor(t, "traffic with the new key", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	t.Logf("rotation to traffic: %v", time.Since(start))
	hosts.AllPairsPing(t, ctrs)
	// The pool's blackhole is felt's route (proto 76) but no peer's: status
	// must not call it drift.
	for _, h := range c.Hosts {
		if _, st := statusJSON(t, h); len(st.Drift) > 0 {
			t.Errorf("host %s: felt status reports drift on a working wireguard network: %+v", h.IP, st.Drift)
		}
	}
	h2.Stop()
	log := h2.Log()
	for _, m := range []string{"key file replaced", "WireGuard public key changed"} {
		if !strings.Contains(log, m) {
			t.Errorf("host 2's log lacks %q", m)
		}
	}
	if strings.Contains(log, next.String()) {
		t.Error("the private key is logged")
	}
}

// The WireGuard peer metrics of a working pair: host 1 counts bytes both
// ways with host 2 (named by its public IP) and a recent handshake.
func TestWireGuardMetrics(t *testing.T) {
	c := newWGCluster(t, 2, "FELT_METRICS_ADDR=127.0.0.1:"+metricsPort)
	pool := netip.MustParsePrefix("10.46.0.0/16")
	ctrs := wgPair(t, c, pool.String(), wgOpts)
	testkit.WaitFor(t, "traffic", func() bool { return ctrs[0].Ping(ctrs[1].Addr.Addr()) == nil })
	_, body := hostGet(t, c.Hosts[0], "/metrics")
	peer := fmt.Sprintf(`{peer="%s",pool="%s"}`, c.Hosts[1].IP, pool)
	for _, m := range []string{"felt_wireguard_peer_receive_bytes_total", "felt_wireguard_peer_transmit_bytes_total", "felt_wireguard_peer_last_handshake_age_seconds"} {
		v, ok := metricValue(body, m+peer)
		switch {
		case !ok:
			t.Errorf("no %s%s in host 1's metrics", m, peer)
		case strings.HasSuffix(m, "_total") && v <= 0:
			t.Errorf("%s%s = %v, want bytes after a ping", m, peer, v)
		case strings.HasSuffix(m, "_seconds") && (v < 0 || v > 180):
			t.Errorf("%s%s = %v, want a handshake within WireGuard's 2 minutes", m, peer, v)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "felt_wireguard") {
				t.Log(l)
			}
		}
	}
}

// metricValue is the value of the sample named exactly so (name and
// labels) in a Prometheus text exposition.
func metricValue(body, sample string) (float64, bool) {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
