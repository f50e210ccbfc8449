// Package consul runs a throwaway Consul agent (the pinned bin/consul) for
// tests: on free loopback ports by default, or inside a named network
// namespace for the integration tests; plain HTTP by default, or locked down
// as production Consul should be (Options.TLS, Options.ACL). The agent is
// always killed by t.Cleanup, also when the test fails or is skipped.
package consul

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
)

const (
	// readyTimeout bounds the wait for a leader after (re)starting; a
	// persistent agent elects itself in a few seconds, -dev at once.
	readyTimeout = 60 * time.Second
	// stopTimeout is how long a stopping agent gets before SIGKILL.
	stopTimeout = 10 * time.Second
	// startAttempts: free ports are found by binding and releasing them,
	// so another process can take one before Consul does; retry then.
	startAttempts = 3
)

// Options configures an agent. The zero value is a -dev agent on loopback.
type Options struct {
	// NetNS runs the agent inside this named network namespace, through
	// `ip netns exec` (so the test must run as root). Bind and Client must
	// then be addresses that exist inside the namespace.
	NetNS string
	// Bind is the address for cluster traffic (Serf, Raft). Default 127.0.0.1.
	Bind string
	// Client is the address the HTTP API listens on. Default 127.0.0.1.
	Client string
	// Persistent runs a single-server agent with its state on disk instead
	// of -dev (whose Raft store is in memory), so that KV data survives
	// Restart. Leader election after a restart then takes a few seconds.
	Persistent bool
	// Args are appended to the agent's command line.
	Args []string
	// Token is the ACL token the readiness probe uses, for agents started
	// with ACLs enabled (default deny) through Args. With ACL it is the
	// management token (a random one if empty).
	Token string
	// TLS serves the HTTP API over HTTPS only (no plain HTTP port) and
	// requires client certificates signed by the agent's CA
	// (verify_incoming). The CA, the server's certificate and a client
	// certificate are made for the agent: see Agent.TLS.
	TLS bool
	// ACL enables ACLs with default policy deny; Agent.Token is the
	// management token. Agent.CreateToken makes tokens with fewer rights.
	ACL bool
}

// TLSFiles are the PEM files of a TLS agent, in the test's temporary
// directory.
type TLSFiles struct {
	CA                    *CA    // signed the server and client certificates
	ServerCert, ServerKey string // the agent's own (names: its Client address, 127.0.0.1, localhost)
	ClientCert, ClientKey string // a client certificate the agent accepts
}

// Agent is a running (or stopped) test agent.
type Agent struct {
	// Addr is the HTTP API address, host:port.
	Addr string
	// DataDir is the agent's data directory, kept across Restart.
	DataDir string
	// Token is the management token with Options.ACL (else Options.Token).
	Token string
	// TLS holds the certificates of an agent started with Options.TLS.
	TLS *TLSFiles

	t       testing.TB
	opts    Options
	binary  string
	args    []string
	logPath string

	mu   sync.Mutex
	proc *process // nil when stopped
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
}

// Start starts an agent and waits until it has elected itself leader. The
// agent is stopped and its directory removed when the test ends. If bin/consul
// is missing the test is skipped, or failed when CI=true.
func Start(t testing.TB, opts Options) *Agent {
	t.Helper()
	if opts.NetNS != "" && (opts.Bind == "" || opts.Client == "") {
		t.Fatalf("testkit/consul: NetNS %q needs Bind and Client addresses inside it", opts.NetNS)
	}
	if opts.Bind == "" {
		opts.Bind = "127.0.0.1"
	}
	if opts.Client == "" {
		opts.Client = "127.0.0.1"
	}
	if opts.ACL && opts.Token == "" {
		opts.Token = randomUUID(t)
	}
	a := &Agent{t: t, opts: opts, binary: Binary(t), Token: opts.Token}
	dir := t.TempDir()
	a.DataDir = filepath.Join(dir, "data")
	a.logPath = filepath.Join(dir, "consul.log")
	if opts.TLS {
		ca := NewCA(t, filepath.Join(dir, "tls"), "consul-ca")
		a.TLS = &TLSFiles{CA: ca}
		a.TLS.ServerCert, a.TLS.ServerKey = ca.ServerCert(t, "consul-server", opts.Client, "127.0.0.1", "localhost")
		a.TLS.ClientCert, a.TLS.ClientKey = ca.ClientCert(t, "consul-client")
	}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			a.dumpLog()
		}
	})

	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		// A failed persistent attempt leaves Raft state naming its ports.
		if err = os.RemoveAll(a.DataDir); err != nil {
			break
		}
		if err = a.pickPorts(); err != nil {
			break
		}
		if err = a.start(); err == nil {
			return a
		}
		if !strings.Contains(a.logTail(50), "address already in use") {
			break
		}
		t.Logf("testkit/consul: port taken (attempt %d), retrying with new ports", attempt)
	}
	a.dumpLog()
	t.Fatalf("testkit/consul: %v", err)
	return nil
}

// Binary returns the path of the pinned bin/consul at the module root
// (testkit.ModuleRoot). When it is missing the test is skipped, or failed
// when CI=true (testkit.Unavailable), with a hint to run `make consul`.
func Binary(t testing.TB) string {
	t.Helper()
	top, err := testkit.ModuleRoot()
	if err != nil {
		t.Fatalf("testkit/consul: %v", err)
	}
	bin := filepath.Join(top, "bin", "consul")
	if _, err := os.Stat(bin); err != nil {
		testkit.Unavailable(t, "testkit/consul: %s not found; run `make consul` to build the pinned Consul", bin)
	}
	return bin
}

// Stop stops the agent (SIGTERM, then SIGKILL after a grace period). The
// data directory and ports are kept for Restart. Stopping a stopped agent
// does nothing.
func (a *Agent) Stop() {
	a.mu.Lock()
	p := a.proc
	a.proc = nil
	a.mu.Unlock()
	if p == nil {
		return
	}
	p.stop()
}

// Restart stops the agent if it runs and starts it again on the same ports
// and data directory, waiting for a leader. A -dev agent comes back empty;
// use Options.Persistent to keep the KV data.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	if err := a.start(); err != nil {
		a.dumpLog()
		a.t.Fatalf("testkit/consul: restart: %v", err)
	}
}

// pickPorts chooses free ports and builds the command line. With NetNS the
// ports are probed outside the namespace: a test namespace is normally empty,
// so a port free here is free there too.
func (a *Agent) pickPorts() error {
	probe := a.opts.Client
	if a.opts.NetNS != "" {
		probe = "127.0.0.1"
	}
	ports, err := freePorts(probe, 4)
	if err != nil {
		return err
	}
	http, serfLAN, serfWAN, server := ports[0], ports[1], ports[2], ports[3]
	a.Addr = net.JoinHostPort(a.opts.Client, strconv.Itoa(http))

	args := []string{"agent",
		"-bind", a.opts.Bind,
		"-client", a.opts.Client,
		"-serf-lan-port", strconv.Itoa(serfLAN),
		"-serf-wan-port", strconv.Itoa(serfWAN),
		"-server-port", strconv.Itoa(server),
		"-dns-port", "-1",
		"-grpc-port", "-1",
		"-grpc-tls-port", "-1",
		"-data-dir", a.DataDir,
		"-node", "felt-test",
		// No phoning home: only the module proxy is reachable anyway.
		"-hcl", "disable_update_check = true",
	}
	if a.TLS != nil {
		// HTTPS only: a client that forgets TLS must fail, not fall back.
		// The -http-port flag would override the config's ports block.
		args = append(args, "-hcl", fmt.Sprintf("ports { http = -1 https = %d }", http),
			"-hcl", fmt.Sprintf(`tls { defaults { ca_file = %q cert_file = %q key_file = %q verify_incoming = true } }`,
				a.TLS.CA.CertFile, a.TLS.ServerCert, a.TLS.ServerKey))
	} else {
		args = append(args, "-http-port", strconv.Itoa(http))
	}
	if a.opts.ACL {
		args = append(args, "-hcl", fmt.Sprintf(`acl { enabled = true default_policy = "deny" tokens { initial_management = %q } }`, a.Token))
	}
	if a.opts.Persistent {
		// What -dev does for speed, minus the in-memory Raft store.
		args = append(args, "-server", "-bootstrap-expect", "1",
			"-hcl", "performance { raft_multiplier = 1 }")
	} else {
		args = append(args, "-dev")
	}
	a.args = append(args, a.opts.Args...)
	return nil
}

// freePorts returns n distinct ports free for both TCP and UDP (Serf uses
// both) on host. Listeners are held until all are chosen so none repeats.
func freePorts(host string, n int) ([]int, error) {
	var ports []int
	var closers []func() error
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100 {
			return nil, fmt.Errorf("no free ports on %s", host)
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("find free port on %s: %w", host, err)
		}
		closers = append(closers, l.Close)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue // UDP side taken; try another
		}
		closers = append(closers, u.Close)
		ports = append(ports, port)
	}
	return ports, nil
}

func (a *Agent) start() error {
	if err := os.MkdirAll(a.DataDir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "==== testkit/consul: starting %s %s\n", a.binary, strings.Join(a.args, " "))

	var cmd *exec.Cmd
	if a.opts.NetNS != "" {
		// ip netns exec execs the agent in place, so the pid is the agent's.
		cmd = exec.Command("ip", append([]string{"netns", "exec", a.opts.NetNS, a.binary}, a.args...)...)
	} else {
		cmd = exec.Command(a.binary, a.args...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = agentEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the test binary dies (panic, timeout), take the agent along.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", a.binary, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	a.mu.Lock()
	a.proc = p
	a.mu.Unlock()

	if err := a.waitLeader(p); err != nil {
		a.Stop()
		return err
	}
	return nil
}

// agentEnv is the test's environment minus CONSUL_* variables, which would
// otherwise point the readiness probe (and agent) at some other Consul.
func agentEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONSUL_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitLeader polls `consul info` until the agent reports itself leader. The
// probe runs through the same netns wrapper as the agent, because with
// NetNS the API address may not be reachable from the test's namespace.
func (a *Agent) waitLeader(p *process) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var last string
	for {
		out, err := a.command(ctx, append([]string{"info"}, a.clientFlags()...)...).CombinedOutput()
		if err == nil && leaderLine(out) {
			return nil
		}
		last = strings.TrimSpace(string(out))
		select {
		case <-p.done:
			return fmt.Errorf("agent exited before electing a leader: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("agent at %s has no leader after %s; last probe: %s", a.Addr, readyTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func leaderLine(out []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "leader = true" {
			return true
		}
	}
	return false
}

// command builds a consul CLI invocation in the agent's namespace.
func (a *Agent) command(ctx context.Context, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if a.opts.NetNS != "" {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", a.opts.NetNS, a.binary}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, a.binary, args...)
	}
	cmd.Env = agentEnv()
	return cmd
}

func (p *process) stop() {
	select {
	case <-p.done:
		return // already exited (and reaped: its pid may be reused)
	default:
	}
	// Signal the process group, which the agent leads (Setpgid), so
	// nothing it spawned outlives it.
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

func (a *Agent) logTail(lines int) string {
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func (a *Agent) dumpLog() {
	if tail := a.logTail(100); tail != "" {
		a.t.Logf("testkit/consul: last lines of the agent log (%s):\n%s", a.logPath, tail)
	}
}
