package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/plugin"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

const netBlue = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"

// sampleStatus is a felt with two networks whose peers are in every state:
// reachable, unreachable, full-size packets lost, not probed yet, lease
// expired, refused; drift; Consul down.
func sampleStatus() plugin.Status {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ip := netip.MustParseAddr
	pfx := netip.MustParsePrefix
	peer := func(host, pub, subnet string, mod func(*plugin.PeerStatus)) plugin.PeerStatus {
		p := plugin.PeerStatus{HostID: host, PublicIP: ip(pub), Subnet: pfx(subnet), Gateway: pfx(subnet).Addr().Next(),
			LeaseExpiry: now.Add(23*time.Hour + 10*time.Minute), Probed: true, Reachable: true, MTUOK: true, RTTSeconds: 0.000412,
			Since: now.Add(-3*time.Minute - 7*time.Second), LastProbe: now.Add(-2 * time.Second)}
		mod(&p)
		return p
	}
	st := plugin.Status{State: plugin.StatusRunning, Time: now, InSync: true,
		Host:    plugin.HostStatus{ID: hostA, PublicIP: ip("192.168.77.11"), Underlay: "eth0", UnderlayMTU: 1500, Version: "1.2.3"},
		Store:   plugin.StoreStatus{Kind: "consul", Addr: "192.168.77.1:8500", Prefix: "felt/", Detail: "Get \"http://192.168.77.1:8500/v1/kv/felt/format\": dial tcp 192.168.77.1:8500: connect: connection refused", LeasesRead: true},
		Cluster: plugin.ClusterStatus{On: true},
		Probes:  plugin.ProbeStatus{On: true, Interval: 5},
		Networks: []plugin.NetworkStatus{
			{ID: netBlue, Name: "blue", Pool: pfx("10.42.0.0/16"), Backend: "vxlan", VNI: 1, MTU: 1450, Subnet: pfx("10.42.7.0/24"), Gateway: ip("10.42.7.1"),
				LeaseExpiry: now.Add(20 * time.Hour), Endpoints: 2, Peers: []plugin.PeerStatus{
					peer(hostB, "192.168.77.12", "10.42.9.0/24", func(*plugin.PeerStatus) {}),
					peer("cccc9999dddd0000eeee1111ffff2222", "192.168.77.13", "10.42.11.0/24", func(p *plugin.PeerStatus) {
						p.Reachable, p.MTUOK, p.RTTSeconds, p.Error = false, false, 0, "no reply from 10.42.11.1 within 1s"
						p.Since = now.Add(-12 * time.Second)
					}),
					peer("dddd0000eeee1111ffff2222aaaa3333", "192.168.77.14", "10.42.12.0/24", func(p *plugin.PeerStatus) { p.MTUOK = false }),
					peer("eeee1111ffff2222aaaa3333bbbb4444", "192.168.77.15", "10.42.13.0/24", func(p *plugin.PeerStatus) {
						*p = plugin.PeerStatus{HostID: p.HostID, PublicIP: p.PublicIP, Subnet: p.Subnet, Gateway: p.Gateway, LeaseExpiry: p.LeaseExpiry}
					}),
					peer("ffff2222aaaa3333bbbb4444cccc5555", "192.168.77.16", "10.42.14.0/24", func(p *plugin.PeerStatus) {
						*p = plugin.PeerStatus{HostID: p.HostID, PublicIP: p.PublicIP, Subnet: p.Subnet, Gateway: p.Gateway,
							LeaseExpiry: now.Add(-5 * time.Minute), Expired: true}
					}),
					peer("aaaa3333bbbb4444cccc5555dddd6666", "127.0.0.1", "10.42.15.0/24", func(p *plugin.PeerStatus) {
						*p = plugin.PeerStatus{HostID: p.HostID, PublicIP: p.PublicIP, Subnet: p.Subnet, Gateway: p.Gateway, LeaseExpiry: p.LeaseExpiry,
							Refused: "peer aaaa3333bbbb4444cccc5555dddd6666: public IP 127.0.0.1 is loopback"}
					}),
				}},
			{ID: "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0", Pool: pfx("10.43.0.0/16"), Backend: "host-gw", MTU: 1500,
				Internal: true, Subnet: pfx("10.43.3.0/24"), Gateway: ip("10.43.3.1"), LeaseExpiry: now.Add(20 * time.Hour), Peers: []plugin.PeerStatus{}},
			{ID: "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f", Name: "sec", Pool: pfx("10.44.0.0/16"), Backend: "wireguard", Port: 51820,
				MTU: 1420, Subnet: pfx("10.44.7.0/24"), Gateway: ip("10.44.7.1"), LeaseExpiry: now.Add(20 * time.Hour), Endpoints: 1, Peers: []plugin.PeerStatus{
					peer(hostB, "192.168.77.12", "10.44.9.0/24", func(*plugin.PeerStatus) {}),
					peer("cccc9999dddd0000eeee1111ffff2222", "192.168.77.13", "10.44.11.0/24", func(*plugin.PeerStatus) {}),
				},
				WireGuard: &plugin.WireGuardStatus{Implementation: "userspace", Device: "feltw.0a2c0000", ListenPort: 51820,
					PublicKey: "Ep5pHn4N2y0vnRtV9nxsr1k4QYgyNqUcH7ZpKsi7w1M=", Peers: []plugin.WireGuardPeer{
						{PublicKey: "aQzg8QZd4bRzGg3dN8dYtBkP1MiL8xT/lRbcmWbGmWE=", Endpoint: "192.168.77.12:51820", AllowedIPs: []string{"10.44.9.0/24"},
							LatestHandshake: now.Add(-47 * time.Second), RxBytes: 3<<20 + 123456, TxBytes: 912},
						{PublicKey: "Zb9wX7hqv0m3t2ZyJc5Qe2ZjLw0m0pB6k0X9cJt4pkM=", Endpoint: "192.168.77.13:51820", AllowedIPs: []string{"10.44.11.0/24"}},
					}}},
		},
		Drift: []plugin.Drift{{Network: netBlue, What: "no route to 10.42.11.0/24 (peer 192.168.77.13, host cccc9999)"}},
	}
	st.Problems = []plugin.Problem{
		{What: "store unreachable (consul 192.168.77.1:8500): connection refused: working from last state", Check: "is Consul up and reachable from this host?"},
		{What: "network 10.42.0.0/16 (blue): peer 192.168.77.13 (host cccc9999, subnet 10.42.11.0/24): unreachable over the overlay (vxlan)", Check: "udp/4789 blocked between the hosts?"},
	}
	return st
}

// The text for people, against testdata/status.golden (go test
// ./cmd/felt -run TestStatusText -update rewrites it).
func TestStatusText(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, "/run/docker/plugins/felt.sock", sampleStatus())
	golden := filepath.Join("testdata", "status.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("felt status text differs from %s (-update rewrites it):\n%s", golden, b.String())
	}
	// What people look for, whatever the layout.
	for _, s := range []string{"UNREACHABLE", "LOST", "probing…", "lease expired", "EXPIRED 5m ago", "PROBLEMS:\n", "UNREACHABLE: Get",
		"check: udp/4789 blocked", "wireguard/userspace", "wireguard of 10.44.0.0/16 (sec): wireguard-go in user space",
		"192.168.77.12:51820  10.44.9.0/24", "47s ago", "3.1 MiB", "never", "drift between the leases and the kernel:\n  network 1a2b3c4d5e6f: no route"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("no %q in:\n%s", s, b.String())
		}
	}
}

// A felt answering on sock with st, through the plugin's real server.
func serveFelt(t *testing.T, sock string, st func() plugin.Status) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := plugin.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second)
	if st != nil {
		srv.SetReady(plugin.Drivers{Status: func(context.Context) plugin.Status { return st() }})
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
}

// shortTemp is a temporary directory with a short path: a unix socket's
// path must fit in 108 bytes, and a plugin ID alone is 64.
func shortTemp(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "fs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func status(t *testing.T, dir string, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := runStatusIn(context.Background(), dir, args, &out, &errOut, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return code, out.String(), errOut.String()
}

const id1 = "1111111111111111111111111111111111111111111111111111111111111111"
const id2 = "2222222222222222222222222222222222222222222222222222222222222222"

// Socket discovery: the one managed plugin that answers is found among a
// dead socket, a directory that is not a plugin ID and a socket that is not
// felt's; with two felts answering, the user is asked to pick; with none,
// exit 2 naming the sockets tried.
func TestStatusFindsTheSocket(t *testing.T) {
	dir := shortTemp(t)
	healthy := func() plugin.Status {
		return plugin.Status{State: plugin.StatusRunning, Host: plugin.HostStatus{ID: hostA}, Store: plugin.StoreStatus{Kind: "embedded", Reachable: true}}
	}
	if code, _, errOut := status(t, dir, nil); code != 2 || !strings.Contains(errOut, "no running felt found under "+dir) {
		t.Fatalf("no felt: %d %s", code, errOut)
	}
	// A dead socket (a plugin that was disabled) and a non-felt one.
	dead := filepath.Join(dir, id2, "felt.sock")
	os.MkdirAll(filepath.Dir(dead), 0o755)
	l, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	other := filepath.Join(dir, "notanid", "felt.sock")
	serveFelt(t, other, healthy) // not a plugin directory: never asked
	if code, _, errOut := status(t, dir, nil); code != 2 || !strings.Contains(errOut, dead+": ") {
		t.Fatalf("only a dead socket: %d %s", code, errOut)
	}

	serveFelt(t, filepath.Join(dir, id1, "felt.sock"), healthy)
	code, out, errOut := status(t, dir, nil, "--json")
	var st plugin.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Host.ID != hostA {
		t.Fatalf("one managed felt: %d %s %s", code, out, errOut)
	}

	// A bare felt too: two answer.
	serveFelt(t, filepath.Join(dir, "felt.sock"), healthy)
	if code, _, errOut := status(t, dir, nil); code != 2 || !strings.Contains(errOut, "several felts answer; pick one with --socket") ||
		!strings.Contains(errOut, filepath.Join(dir, id1, "felt.sock")) || !strings.Contains(errOut, filepath.Join(dir, "felt.sock")) {
		t.Fatalf("two felts: %d %s", code, errOut)
	}
	if code, out, _ := status(t, dir, nil, "--socket", filepath.Join(dir, "felt.sock")); code != 0 || !strings.Contains(out, "no problems found") {
		t.Fatalf("--socket: %d %s", code, out)
	}
	if code, _, errOut := status(t, dir, nil, "--socket", dead); code != 2 || !strings.Contains(errOut, "--socket "+dead) {
		t.Fatalf("--socket of a dead felt: %d %s", code, errOut)
	}
	if code, _, _ := status(t, dir, nil, "extra"); code != 2 {
		t.Fatalf("an extra argument: %d", code)
	}
}

// Exit status and states: problems exit 1, a felt still starting or one
// whose start failed exit 1 with a sentence saying so.
func TestStatusExitStatus(t *testing.T) {
	dir := shortTemp(t)
	sock := filepath.Join(dir, "felt.sock")
	serveFelt(t, sock, sampleStatus)
	code, out, _ := status(t, dir, nil)
	if code != 1 || !strings.Contains(out, "PROBLEMS:") {
		t.Fatalf("problems: %d\n%s", code, out)
	}
	code, out, _ = status(t, dir, nil, "--json")
	var st plugin.Status
	if code != 1 || json.Unmarshal([]byte(out), &st) != nil || len(st.Problems) != 2 || st.Networks[0].Peers[1].Reachable {
		t.Fatalf("--json with problems: %d\n%s", code, out)
	}

	starting := filepath.Join(dir, id1, "felt.sock")
	serveFelt(t, starting, nil) // never ready
	code, out, _ = status(t, dir, nil, "--socket", starting)
	if code != 1 || !strings.Contains(out, "is starting") {
		t.Fatalf("starting: %d %s", code, out)
	}
	// FELT_SOCKET names a bare felt's socket.
	if code, out, _ := status(t, shortTemp(t), map[string]string{"FELT_SOCKET": sock}); code != 1 || !strings.Contains(out, "PROBLEMS:") {
		t.Fatalf("FELT_SOCKET: %d %s", code, out)
	}
}
