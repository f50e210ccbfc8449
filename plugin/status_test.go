package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/vxlan"
	"github.com/felt-net/felt/state"
	"github.com/felt-net/felt/testkit"
)

func getStatus(t *testing.T, srv *httptest.Server) Status {
	t.Helper()
	r, err := http.Post(srv.URL+StatusPath, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	var st Status
	if r.StatusCode != http.StatusOK || json.Unmarshal(b, &st) != nil {
		t.Fatalf("%s: %d %s", StatusPath, r.StatusCode, b)
	}
	return st
}

// The status call answers at once in every state: "starting" before
// start-up is done (no waiting, unlike Docker's calls), "failed" with the
// reason, and the App's status once ready.
func TestStatusCallStates(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := NewServer(log, time.Hour)
	srv := httptest.NewServer(s)
	defer srv.Close()
	start := time.Now()
	if st := getStatus(t, srv); st.State != StatusStarting || time.Since(start) > 5*time.Second {
		t.Fatalf("before start-up: %+v after %s", st, time.Since(start))
	}
	s.SetFailed(errors.New("state store in /x: permission denied"))
	if st := getStatus(t, srv); st.State != StatusFailed || st.Error != "state store in /x: permission denied" {
		t.Fatalf("after a failed start: %+v", st)
	}

	s2 := NewServer(log, time.Hour)
	srv2 := httptest.NewServer(s2)
	defer srv2.Close()
	s2.SetReady(Drivers{Status: func(context.Context) Status {
		return Status{State: StatusRunning, Host: HostStatus{ID: "abc"}, Problems: []Problem{{What: "w", Check: "c"}}}
	}})
	if st := getStatus(t, srv2); st.State != StatusRunning || st.Host.ID != "abc" || len(st.Problems) != 1 {
		t.Fatalf("ready: %+v", st)
	}
}

// problems: one line per thing wrong, with what to check; none when all
// is well, and none for a peer not probed yet.
func TestStatusProblems(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	peer := func(ip string, mod func(*PeerStatus)) PeerStatus {
		p := PeerStatus{HostID: "0123456789abcdef", PublicIP: netip.MustParseAddr(ip), Subnet: netip.MustParsePrefix("10.42.9.0/24"),
			LeaseExpiry: now.Add(time.Hour), Probed: true, Reachable: true, MTUOK: true}
		mod(&p)
		return p
	}
	healthy := Status{State: StatusRunning, InSync: true, Store: StoreStatus{Kind: "consul", Addr: "10.0.0.5:8500", Reachable: true, LeasesRead: true},
		Networks: []NetworkStatus{{Pool: netip.MustParsePrefix("10.42.0.0/16"), Backend: "vxlan", MTU: 1450, Subnet: netip.MustParsePrefix("10.42.1.0/24"),
			LeaseExpiry: now.Add(time.Hour), Peers: []PeerStatus{peer("192.168.1.2", func(*PeerStatus) {}), peer("192.168.1.3", func(p *PeerStatus) { p.Probed, p.Reachable = false, false })}}}}
	if ps := problems(healthy, now); len(ps) != 0 {
		t.Fatalf("healthy: %v", ps)
	}

	bad := healthy
	bad.Store = StoreStatus{Kind: "consul", Addr: "10.0.0.5:8500", Detail: "connection refused", LeasesRead: true}
	bad.Networks = []NetworkStatus{healthy.Networks[0]}
	n := &bad.Networks[0]
	n.Name = "blue"
	n.LeaseExpiry = now.Add(-time.Minute)
	n.Peers = []PeerStatus{
		peer("192.168.1.2", func(p *PeerStatus) { p.Reachable, p.MTUOK = false, false }),
		peer("192.168.1.3", func(p *PeerStatus) { p.MTUOK = false }),
		peer("192.168.1.4", func(p *PeerStatus) { p.Expired, p.Probed = true, false }),
		peer("127.0.0.1", func(p *PeerStatus) { p.Refused, p.Probed = "peer 0123: public IP 127.0.0.1 is loopback", false }),
	}
	bad.Drift = []Drift{{Network: "1234567890abcdef", What: "no route to 10.42.9.0/24"}}
	var lines []string
	for _, p := range problems(bad, now) {
		lines = append(lines, p.What+" => "+p.Check)
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{
		"store unreachable (consul 10.0.0.5:8500): connection refused: working from last state => is Consul up",
		"network 10.42.0.0/16 (blue): this host's lease of 10.42.1.0/24 expired at 2026-12-01T11:59:00Z => lease expired",
		"peer 192.168.1.2 (host 01234567, subnet 10.42.9.0/24): unreachable over the overlay (vxlan) => udp/4789 blocked",
		"peer 192.168.1.3 (host 01234567, subnet 10.42.9.0/24): reachable, but full-size packets (1450 bytes) lost => MTU: full-size packets lost: lower -o com.docker.network.driver.mtu or fix the underlay MTU",
		"peer 192.168.1.4 (host 01234567, subnet 10.42.9.0/24): lease expired at",
		"drift in network 1234567890ab: no route to 10.42.9.0/24 => felt repairs it",
		"peer 127.0.0.1 (host 01234567, subnet 10.42.9.0/24): refused, not programmed: peer 0123: public IP 127.0.0.1 is loopback => that host's lease cannot be programmed",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no problem %q in:\n%s", want, all)
		}
	}
	if len(lines) != 7 {
		t.Errorf("%d problems, want 7:\n%s", len(lines), all)
	}
	n.Backend = "host-gw"
	if ps := problems(bad, now); !strings.Contains(ps[2].Check, "peer off this host's L2 segment") {
		t.Errorf("host-gw hint: %+v", ps[2])
	}
}

// The status of a built felt on the embedded store, as JSON: running, its
// host ID and version, the store reachable, probing on, no network, no
// drift, nothing wrong with the store.
func TestStatusOfApp(t *testing.T) {
	testkit.NeedRoot(t) // Build needs root (netlink, iptables)
	dir := t.TempDir()
	s, err := SettingsFromEnv(func(k string) (string, bool) {
		v, ok := map[string]string{"FELT_STATE_DIR": dir, "FELT_SOCKET": filepath.Join(dir, "felt.sock"), "FELT_DOCKER_HOST": "off"}[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Version = "1.2.3-test"
	app, err := Build(context.Background(), s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	srv := httptest.NewServer(NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second))
	defer srv.Close()
	srv.Config.Handler.(*Server).SetReady(Drivers{Status: app.Status})
	st := getStatus(t, srv)
	if st.State != StatusRunning || st.Host.ID == "" || st.Host.Version != "1.2.3-test" || st.Store.Kind != "embedded" || !st.Store.Reachable ||
		!st.Probes.On || st.Probes.Interval != 5 || st.Cluster.On || !strings.Contains(st.Cluster.Why, "embedded store") ||
		len(st.Networks) != 0 || len(st.Drift) != 0 {
		t.Fatalf("status: %+v", st)
	}
	for _, p := range st.Problems {
		if !strings.HasPrefix(p.What, "underlay: ") { // the test machine's own underlay is not the test's business
			t.Errorf("problem: %+v", p)
		}
	}
}

// A wireguard network: a live peer without a WireGuard peer (a skipped
// key) is a problem, an expired one is not; a device felt cannot read is
// one too.
func TestStatusWireGuardProblems(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	pfx := netip.MustParsePrefix
	peer := func(ip, subnet string, expired bool) PeerStatus {
		return PeerStatus{HostID: "0123456789abcdef", PublicIP: netip.MustParseAddr(ip), Subnet: pfx(subnet), LeaseExpiry: now.Add(time.Hour), Expired: expired}
	}
	st := Status{State: StatusRunning, InSync: true, Store: StoreStatus{Kind: "consul", Reachable: true, LeasesRead: true},
		Networks: []NetworkStatus{{Pool: pfx("10.44.0.0/16"), Backend: "wireguard", MTU: 1420, Subnet: pfx("10.44.1.0/24"), LeaseExpiry: now.Add(time.Hour),
			Peers: []PeerStatus{peer("192.168.1.2", "10.44.2.0/24", false), peer("192.168.1.3", "10.44.3.0/24", false), peer("192.168.1.4", "10.44.4.0/24", true)},
			WireGuard: &WireGuardStatus{Implementation: "userspace", Device: "feltw.0a2c0000", Peers: []WireGuardPeer{
				{PublicKey: "k2", AllowedIPs: []string{"10.44.2.0/24"}}}}}}}
	wgProblems := func() []Problem {
		var out []Problem
		for _, p := range problems(st, now) {
			if strings.Contains(p.What, "WireGuard") {
				out = append(out, p)
			}
		}
		return out
	}
	ps := wgProblems()
	if len(ps) != 1 || !strings.Contains(ps[0].What, "peer 192.168.1.3 (host 01234567, subnet 10.44.3.0/24) has no WireGuard peer on feltw.0a2c0000") ||
		!strings.Contains(ps[0].Check, "peer skipped") {
		t.Fatalf("problems %+v", ps)
	}
	// A refused lease is reported as refused (not as a missing WireGuard peer).
	st.Networks[0].Peers[1].Refused = "public IP is loopback"
	if ps := wgProblems(); len(ps) != 0 {
		t.Fatalf("a refused lease is reported as a missing WireGuard peer: %+v", ps)
	}
	st.Networks[0].Peers[1].Refused = ""
	st.Networks[0].WireGuard.Peers = append(st.Networks[0].WireGuard.Peers, WireGuardPeer{PublicKey: "k3", AllowedIPs: []string{"10.44.3.0/24"}})
	if ps := wgProblems(); len(ps) != 0 {
		t.Fatalf("every live peer has a WireGuard peer: %+v", ps)
	}
	st.Networks[0].WireGuard.Error = "wireguard feltw.0a2c0000: read device: file does not exist"
	if ps := wgProblems(); len(ps) != 1 || !strings.Contains(ps[0].What, "WireGuard device feltw.0a2c0000 unreadable") {
		t.Fatalf("problems %+v", ps)
	}
}

// A lease CheckPeer refuses shows as refused in the network's peers, and is
// not probed; an accepted one is not marked.
func TestNetworkStatusMarksRefusedPeers(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	pfx := netip.MustParsePrefix
	a := &App{hostID: "me", backends: overlay.NewBackends(vxlan.New(overlay.BackendConfig{}))}
	r := state.Network{ID: "n1", Pool: pfx("10.42.0.0/16"), Backend: "vxlan", MTU: 1450, Subnet: pfx("10.42.1.0/24"), Gateway: netip.MustParseAddr("10.42.1.1")}
	leases := []lease.Lease{
		{Pool: r.Pool, Subnet: pfx("10.42.2.0/24"), HostID: "good", PublicIP: netip.MustParseAddr("192.168.1.2"), Expiry: now.Add(time.Hour)},
		{Pool: r.Pool, Subnet: pfx("10.42.3.0/24"), HostID: "bad", PublicIP: netip.MustParseAddr("127.0.0.1"), Expiry: now.Add(time.Hour)},
		{Pool: r.Pool, Subnet: pfx("10.42.4.0/24"), HostID: "zero", PublicIP: netip.MustParseAddr("192.168.1.4"), Expiry: now.Add(time.Hour),
			BackendData: json.RawMessage(`{"vtepMAC":"00:00:00:00:00:00"}`)},
	}
	leases[0].BackendData = json.RawMessage(`{"vtepMAC":"02:42:0a:2a:02:00"}`)
	ns := a.networkStatus(r, lease.Network{}, leases, now)
	if len(ns.Peers) != 3 || ns.Peers[0].Refused != "" || !strings.Contains(ns.Peers[1].Refused, "127.0.0.1") || !strings.Contains(ns.Peers[2].Refused, "all-zero") {
		t.Fatalf("peers %+v: want 10.42.3.0/24 refused for its loopback public IP, 10.42.4.0/24 for its VTEP MAC, 10.42.2.0/24 not", ns.Peers)
	}
}
