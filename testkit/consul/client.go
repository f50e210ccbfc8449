package consul

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// URL is the agent's HTTP API as CONSUL_HTTP_ADDR takes it:
// https://host:port with Options.TLS, else http://host:port.
func (a *Agent) URL() string {
	if a.TLS != nil {
		return "https://" + a.Addr
	}
	return "http://" + a.Addr
}

// ClientEnv is the environment of a client with every right: the agent's
// URL, its CA and client certificate with TLS, the management token with
// ACLs. Tests drop or replace entries to see what a misconfigured client gets.
func (a *Agent) ClientEnv() []string {
	env := []string{"CONSUL_HTTP_ADDR=" + a.URL()}
	if a.TLS != nil {
		env = append(env, "CONSUL_CACERT="+a.TLS.CA.CertFile,
			"CONSUL_CLIENT_CERT="+a.TLS.ClientCert, "CONSUL_CLIENT_KEY="+a.TLS.ClientKey)
	}
	if a.Token != "" {
		env = append(env, "CONSUL_HTTP_TOKEN="+a.Token)
	}
	return env
}

// APIConfig is ClientEnv as a Consul API client's configuration: the
// agent's address, its CA and client certificate with TLS, the management
// token with ACLs. It reads no CONSUL_* variable of the test's own
// environment.
func (a *Agent) APIConfig() *consulapi.Config {
	cfg := &consulapi.Config{Address: a.Addr, Scheme: "http", Token: a.Token}
	if a.TLS != nil {
		cfg.Scheme = "https"
		cfg.TLSConfig = consulapi.TLSConfig{CAFile: a.TLS.CA.CertFile, CertFile: a.TLS.ClientCert, KeyFile: a.TLS.ClientKey}
	}
	return cfg
}

// clientFlags are the consul CLI's flags for ClientEnv.
func (a *Agent) clientFlags() []string {
	flags := []string{"-http-addr", a.URL()}
	if a.TLS != nil {
		flags = append(flags, "-ca-file", a.TLS.CA.CertFile, "-client-cert", a.TLS.ClientCert, "-client-key", a.TLS.ClientKey)
	}
	if a.Token != "" {
		flags = append(flags, "-token", a.Token)
	}
	return flags
}

// CLI runs `consul <subcommand...> <client flags> <args...>` against the
// agent (in its namespace, with its certificates and management token) and
// returns the trimmed output; the test fails on error. Example:
// a.CLI([]string{"kv", "get"}, "felt/x").
func (a *Agent) CLI(subcommand []string, args ...string) string {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	all := append(append(append([]string{}, subcommand...), a.clientFlags()...), args...)
	out, err := a.command(ctx, all...).CombinedOutput()
	if err != nil {
		a.t.Fatalf("testkit/consul: consul %s: %v\n%s", strings.Join(subcommand, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// CreateToken makes an ACL policy with these rules (HCL) and returns the
// secret of a new token holding just that policy. The agent needs
// Options.ACL.
func (a *Agent) CreateToken(name, rules string) string {
	a.t.Helper()
	if !a.opts.ACL {
		a.t.Fatal("testkit/consul: CreateToken needs an agent started with Options.ACL")
	}
	a.CLI([]string{"acl", "policy", "create"}, "-name", name, "-rules", rules)
	out := a.CLI([]string{"acl", "token", "create"}, "-policy-name", name, "-description", name, "-format", "json")
	var tok struct{ SecretID string }
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.SecretID == "" {
		a.t.Fatalf("testkit/consul: token for policy %s: %v\n%s", name, err, out)
	}
	return tok.SecretID
}

// randomUUID is a random token in the UUID form Consul requires of
// initial_management.
func randomUUID(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testkit/consul: %v", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
