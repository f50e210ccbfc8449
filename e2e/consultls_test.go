package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
)

// TestConsulTLSManagedPlugin's names: a plugin of its own, so the suite's
// felt-e2e and a user's felt are left alone.
const (
	pluginTLS = "felt-tls:latest"
	labelTLS  = "felt-tls"
	netTLS    = "felt-tls-net"
	poolTLS   = "10.64.0.0/16"
	vniTLS    = "4064" // explicit: other felt networks on this machine take the low ones
)

// The managed plugin against a Consul locked down as in production: HTTPS
// only, client certificates verified, ACLs denying by default. The
// certificates go under the plugin's state mount, where the plugin reads
// them at CONSUL_CACERT etc.; docker network create works, and with a wrong
// CA or no token its error says which.
func TestConsulTLSManagedPlugin(t *testing.T) {
	consul.Binary(t) // skips (fails with CI=true) without bin/consul
	// A second felt in the root namespace would take another felt's
	// networks' links for its own orphans at start-up and remove them.
	if out, _ := testkit.RunWithin(cmdTimeout, "ip", "-o", "link", "show"); strings.Contains(out, "alias felt:net:") {
		testkit.Unavailable(t, "the root namespace holds another felt plugin's networks: a second felt here would remove them; remove those networks first")
	}
	removeTLSLeftovers()
	t.Cleanup(removeTLSLeftovers) // a safety net; each step cleans up after itself too

	// The plugin uses the host's network: a Consul on 127.0.0.1 is reachable.
	agent := consul.Start(t, consul.Options{TLS: true, ACL: true})
	token := agent.CreateToken("felt", `key_prefix "felt/" { policy = "write" }`)
	other := consul.NewCA(t, t.TempDir(), "other-ca")

	// The certificates into the state directory, as a user would: the
	// plugin sees it at the state mount's destination.
	state := t.TempDir()
	mount := stateMountDestination(t)
	if err := os.MkdirAll(filepath.Join(state, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{
		"ca.pem": agent.TLS.CA.CertFile, "client.pem": agent.TLS.ClientCert, "client-key.pem": agent.TLS.ClientKey,
		"other-ca.pem": other.CertFile,
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, "tls", name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The token in a file too: kept out of `docker plugin inspect`.
	if err := os.WriteFile(filepath.Join(state, "tls", "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	inPlugin := func(name string) string { return filepath.Join(mount, "tls", name) }

	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	testkit.MustRun(t, filepath.Join(top, "scripts", "plugin-rootfs.sh"), dir)
	mustDocker(t, "plugin", "create", pluginTLS, dir)
	t.Cleanup(func() { // before the state directory goes
		_, _ = docker("plugin", "disable", "-f", pluginTLS)
		_, _ = docker("plugin", "rm", "-f", pluginTLS)
	})
	mustDocker(t, "plugin", "set", pluginTLS, "state.source="+state, "FELT_LOG_LEVEL=debug",
		"CONSUL_HTTP_ADDR="+agent.Addr, "CONSUL_HTTP_SSL=true",
		"CONSUL_CACERT="+inPlugin("ca.pem"),
		"CONSUL_CLIENT_CERT="+inPlugin("client.pem"), "CONSUL_CLIENT_KEY="+inPlugin("client-key.pem"),
		"CONSUL_HTTP_TOKEN_FILE="+inPlugin("token"))
	mustDocker(t, "plugin", "enable", pluginTLS)
	createArgs := []string{"network", "create", "-d", pluginTLS, "--ipam-driver", pluginTLS, "--label", labelTLS,
		"--subnet", poolTLS, "-o", "vni=" + vniTLS, netTLS}

	t.Run("works", func(t *testing.T) {
		mustDocker(t, createArgs...)
		t.Cleanup(func() { _, _ = docker("network", "rm", netTLS) })
		name := "felt-tls-a"
		mustDocker(t, "run", "-d", "--name", name, "--label", labelTLS, "--network", netTLS, image, "sleep", "1d")
		t.Cleanup(func() { _, _ = docker("rm", "-f", name) })
		ip := netip.MustParseAddr(ipOf(t, name, netTLS))
		if out, err := docker("run", "--rm", "--label", labelTLS, "--network", netTLS, image, "ping", "-c", "1", "-W", "5", ip.String()); err != nil {
			t.Fatalf("ping %s on %s: %v\n%s", ip, netTLS, err, out)
		}
		// The lease went through the locked-down Consul.
		ls := tlsLeases(t, agent)
		if len(ls) != 1 || !ls[0].Subnet.Contains(ip) {
			t.Fatalf("leases in Consul %+v: want one, holding the container's %s", ls, ip)
		}
	})

	// reconfigure disables the plugin, changes settings and enables it
	// again (docker plugin set refuses an enabled plugin).
	reconfigure := func(t *testing.T, settings ...string) {
		t.Helper()
		mustDocker(t, "plugin", "disable", pluginTLS)
		mustDocker(t, append([]string{"plugin", "set", pluginTLS}, settings...)...)
		mustDocker(t, "plugin", "enable", pluginTLS)
	}
	for _, tc := range []struct {
		name        string
		set, before []string
		want        string
	}{
		{"wrong CA", []string{"CONSUL_CACERT=" + inPlugin("other-ca.pem")}, []string{"CONSUL_CACERT=" + inPlugin("ca.pem")},
			"Consul's certificate is not signed by the CA in CONSUL_CACERT=" + inPlugin("other-ca.pem")},
		{"no token", []string{"CONSUL_HTTP_TOKEN_FILE="}, []string{"CONSUL_HTTP_TOKEN_FILE=" + inPlugin("token")},
			"no token (CONSUL_HTTP_TOKEN is empty)"},
		{"no client certificate", []string{"CONSUL_CLIENT_CERT=", "CONSUL_CLIENT_KEY="},
			[]string{"CONSUL_CLIENT_CERT=" + inPlugin("client.pem"), "CONSUL_CLIENT_KEY=" + inPlugin("client-key.pem")},
			"Consul refused the connection, it requires a client certificate: set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reconfigure(t, tc.set...)
			t.Cleanup(func() { reconfigure(t, tc.before...) })
			out, err := docker(createArgs...)
			t.Logf("docker network create: %s", out) // what a user sees
			if err == nil {
				_, _ = docker("network", "rm", netTLS)
				t.Fatalf("docker network create with %v succeeded:\n%s", tc.set, out)
			}
			if !strings.Contains(out, tc.want) || !strings.Contains(out, "consul "+agent.Addr) {
				t.Fatalf("docker network create with %v:\n%s\nwant the error to say %q and name consul %s", tc.set, out, tc.want, agent.Addr)
			}
			if strings.Contains(out, token) || strings.Contains(out, agent.Token) {
				t.Fatalf("the error shows a token:\n%s", out)
			}
		})
	}

	// And with everything right again it works again.
	mustDocker(t, createArgs...)
	if _, err := docker("network", "rm", netTLS); err != nil {
		t.Fatalf("docker network rm %s: %v", netTLS, err)
	}
}

// stateMountDestination is where config.json mounts the state directory
// inside the plugin.
func stateMountDestination(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Mounts []struct{ Name, Destination string }
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	for _, m := range cfg.Mounts {
		if m.Name == "state" {
			return m.Destination
		}
	}
	t.Fatal("config.json has no mount named state")
	return ""
}

// tlsLeases reads poolTLS's leases from Consul with the management token.
func tlsLeases(t testing.TB, agent *consul.Agent) []lease.Lease {
	t.Helper()
	s, err := consulkv.New(agent.APIConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ls, err := lease.NewRegistry(s, "felt/", nil).Leases(ctx, netip.MustParsePrefix(poolTLS))
	if err != nil {
		t.Fatalf("leases in Consul: %v", err)
	}
	return ls
}

// removeTLSLeftovers removes what TestConsulTLSManagedPlugin makes, also
// after an interrupted run.
func removeTLSLeftovers() { removeLabelled(docker, labelTLS, pluginTLS) }
