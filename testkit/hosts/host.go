// Package hosts runs felt daemons inside network-namespace "hosts",
// drives them over their sockets with the JSON Docker sends, plays Docker's
// part of moving the container end of each veth into a "container"
// namespace, and sends real packets.
package hosts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
)

// NewNS creates a network namespace (testkit/netns) with lo up, removed at
// cleanup, and returns its name: hosts and containers are driven by name,
// through ip -n and ip netns exec.
func NewNS(t testing.TB, role string) string {
	t.Helper()
	return netns.New(t, role).Name
}

// peerSeq names the underlay ends of host veths, unique in this process.
var peerSeq atomic.Uint64

// Host is a network namespace running a felt daemon.
type Host struct {
	t    testing.TB
	NS   string
	Dir  string // state dir
	Sock string
	Env  []string
	IP   string // underlay address
	// Binary is the felt binary this host runs.
	Binary string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

// HostOptions configure NewHost.
type HostOptions struct {
	// Binary is the felt binary to run (see BuildFelt).
	Binary string
	// Underlay: the namespace holding the underlay bridge, and this host's
	// address on it (CIDR). Empty: a dummy interface with 192.168.250.2/24.
	UnderlayNS, UnderlayBridge, Addr string
	Env                              []string
}

// NewHost creates a host namespace with an underlay interface "ul0" and
// starts felt in it.
func NewHost(t testing.TB, o HostOptions) *Host {
	t.Helper()
	ns := NewNS(t, "h")
	h := &Host{t: t, NS: ns, Dir: t.TempDir(), Binary: o.Binary}
	h.Sock = filepath.Join(h.Dir, "felt.sock")
	addr := o.Addr
	if o.UnderlayNS == "" {
		addr = "192.168.250.2/24"
		testkit.MustRun(t, "ip", "-n", ns, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0p")
		testkit.MustRun(t, "ip", "-n", ns, "link", "set", "ul0p", "up")
	} else {
		peer := fmt.Sprintf("u%d-%d", os.Getpid()%100000, peerSeq.Add(1)) // at most 15 characters
		testkit.MustRun(t, "ip", "link", "add", "ul0", "netns", ns, "type", "veth", "peer", "name", peer, "netns", o.UnderlayNS)
		testkit.MustRun(t, "ip", "-n", o.UnderlayNS, "link", "set", peer, "master", o.UnderlayBridge, "up")
	}
	h.IP = strings.Split(addr, "/")[0]
	testkit.MustRun(t, "ip", "-n", ns, "addr", "add", addr, "dev", "ul0")
	testkit.MustRun(t, "ip", "-n", ns, "link", "set", "ul0", "up")
	testkit.MustRun(t, testkit.NetNSExec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")...)
	h.Env = append([]string{
		"FELT_SOCKET=" + h.Sock, "FELT_STATE_DIR=" + h.Dir, "FELT_IFACE=ul0", "FELT_LOG_LEVEL=debug",
		"FELT_RESYNC_INTERVAL=1s", "PATH=" + os.Getenv("PATH"),
	}, o.Env...)
	h.Start()
	t.Cleanup(h.Stop)
	return h
}

// Start launches felt in the host namespace and waits for its socket.
func (h *Host) Start() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	// A private tmpfs on /var/run/wireguard for each daemon: WireGuard's
	// UAPI sockets live there (a path hard-coded in wgctrl and
	// wireguard-go) and wireguard device names derive from the pool, so two
	// hosts on this one filesystem would take each other's sockets. ip
	// netns exec already gives the command a mount namespace of its own
	// (mounts in it do not propagate back), so the tmpfs is seen by this
	// daemon only and goes with it. sh execs felt: the PID stays felt's and
	// the process group (Setpgid) is unchanged, so Kill, Stop and signal
	// still reach it directly. (/var/run is the path the libraries use; on
	// most systems it is a symlink to /run.)
	cmd := exec.Command("ip", testkit.NetNSExec(h.NS, "sh", "-c",
		`mkdir -p /var/run/wireguard && mount -t tmpfs -o mode=0700 felt-wg /var/run/wireguard && exec "$0" "$@"`, h.Binary)[1:]...)
	cmd.Env = h.Env
	h.log = &bytes.Buffer{}
	cmd.Stdout = h.log
	cmd.Stderr = h.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	_ = os.Remove(h.Sock)
	if err := cmd.Start(); err != nil {
		h.t.Fatalf("start felt: %v", err)
	}
	h.cmd = cmd
	h.done = make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(h.done)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", h.Sock); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("felt in %s did not open its socket:\n%s", h.NS, h.log.String())
}

// PID is the process ID of the running felt (0 when stopped), for a test
// that looks into its mount namespace (/proc/PID/root: its private
// /var/run/wireguard).
func (h *Host) PID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// Instance is the felt instance ID (the first 8 characters of its host ID),
// read from the log of a stopped felt: it tags felt's links and rules.
func (h *Host) Instance() string {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		h.t.Fatal("Instance: stop felt first (its log is still being written)")
	}
	_, rest, ok := strings.Cut(h.log.String(), "msg=\"felt ready\" host=")
	if !ok || len(rest) < 8 {
		h.t.Fatalf("no host ID in felt's log:\n%s", h.log.String())
	}
	return rest[:8]
}

// Log is the output of the felt last started, read once it has stopped
// (Stop or Kill): it is still being written while felt runs.
func (h *Host) Log() string {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		h.t.Fatal("Log: stop felt first (its log is still being written)")
	}
	return h.log.String()
}

// Kill stops felt with SIGKILL: no chance to clean up, as after a crash.
func (h *Host) Kill() { h.signal(syscall.SIGKILL) }

// Stop stops felt with SIGTERM (SIGKILL after 10 s, as dockerd does).
func (h *Host) Stop() { h.signal(syscall.SIGTERM) }

func (h *Host) signal(sig syscall.Signal) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return
	}
	_ = syscall.Kill(-h.cmd.Process.Pid, sig)
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.done
	}
	if h.t.Failed() {
		h.t.Logf("felt log of %s:\n%s", h.NS, h.log.String())
	}
	h.cmd = nil
}

// Call posts req to felt's socket as Docker does and decodes the answer into
// resp. A non-200 answer is returned as an error holding its "Err".
func (h *Host) Call(method string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return h.CallRaw(method, body, resp)
}

// CallRaw posts body unchanged (for malformed-input tests).
func (h *Host) CallRaw(method string, body []byte, resp any) error {
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", h.Sock)
	}}, Timeout: 60 * time.Second}
	r, err := client.Post("http://felt/"+method, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer r.Body.Close()
	data, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK {
		var e struct{ Err string }
		if json.Unmarshal(data, &e) == nil && e.Err != "" {
			return &CallError{Status: r.StatusCode, Msg: e.Err}
		}
		return &CallError{Status: r.StatusCode, Msg: string(data)}
	}
	if resp != nil {
		return json.Unmarshal(data, resp)
	}
	return nil
}

// CallError is a non-200 answer.
type CallError struct {
	Status int
	Msg    string
}

func (e *CallError) Error() string { return fmt.Sprintf("status %d: %s", e.Status, e.Msg) }
