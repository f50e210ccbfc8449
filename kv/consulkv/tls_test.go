package consulkv

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/kvtest"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/consul"
)

// consulVars are the variables api.DefaultConfig reads that matter here;
// storeFromEnv clears them all so that only the test's own apply.
var consulVars = []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL",
	"CONSUL_HTTP_SSL_VERIFY", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY",
	"CONSUL_TLS_SERVER_NAME", "CONSUL_HTTP_AUTH"}

// storeFromEnv builds a store the way felt does, from api.DefaultConfig(),
// with exactly the variables in env ("NAME=value") set.
func storeFromEnv(t *testing.T, env []string) (*Store, error) {
	t.Helper()
	for _, v := range consulVars {
		t.Setenv(v, "")
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return New(api.DefaultConfig())
}

// A Consul locked down as in production (HTTPS only, verified client
// certificates, default-deny ACLs), reached with Consul's standard
// variables: the whole store contract holds with a token that may only
// write its own prefix.
func TestContractOverTLSWithACLs(t *testing.T) {
	agent := consul.Start(t, consul.Options{TLS: true, ACL: true})
	token := agent.CreateToken("kvtest-rw", `key_prefix "kvtest/" { policy = "write" }`)
	env := testkit.SetEnv(agent.ClientEnv(), "CONSUL_HTTP_TOKEN="+token)
	if !strings.HasPrefix(agent.URL(), "https://") {
		t.Fatalf("agent URL %s is not https", agent.URL())
	}
	kvtest.Run(t, func(t *testing.T) kv.Store {
		s, err := storeFromEnv(t, env)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
	// CONSUL_HTTP_SSL=true with a bare host:port is the other way to ask
	// for TLS.
	s, err := storeFromEnv(t, testkit.SetEnv(env, "CONSUL_HTTP_ADDR="+agent.Addr, "CONSUL_HTTP_SSL=true"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Put(ctx, "kvtest/ssl", []byte("x")); err != nil {
		t.Fatalf("put with CONSUL_HTTP_SSL=true: %v", err)
	}
	// The token from a file (the way to keep it out of `docker plugin
	// inspect`).
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = storeFromEnv(t, testkit.SetEnv(env, "CONSUL_HTTP_TOKEN=", "CONSUL_HTTP_TOKEN_FILE="+tokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "kvtest/file", []byte("x")); err != nil {
		t.Fatalf("put with CONSUL_HTTP_TOKEN_FILE: %v", err)
	}
}

// Every way felt's Consul settings can be wrong gives an error that says
// which setting, for writes, reads, transactions and blocking queries
// alike, and never shows the token.
func TestSettingErrorsNameTheVariable(t *testing.T) {
	agent := consul.Start(t, consul.Options{TLS: true, ACL: true})
	other := consul.NewCA(t, t.TempDir(), "other-ca")
	strangerCert, strangerKey := other.ClientCert(t, "stranger")
	otherPrefix := agent.CreateToken("other-rw", `key_prefix "other/" { policy = "write" }`)
	const unknownToken = "6b1c7a0e-0d53-4c3f-9a8e-2f8f1f6f7e21"
	good := agent.ClientEnv()
	unknownTokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(unknownTokenFile, []byte(unknownToken), 0o600); err != nil {
		t.Fatal(err)
	}

	emptyTokenFile := filepath.Join(t.TempDir(), "empty-token")
	if err := os.WriteFile(emptyTokenFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// A plain HTTP server, for TLS asked of a server without it.
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)

	for _, tc := range []struct {
		name string
		env  []string
		want []string // all in the error
	}{
		{"wrong CA", testkit.SetEnv(good, "CONSUL_CACERT="+other.CertFile),
			[]string{"not signed by the CA in CONSUL_CACERT=" + other.CertFile, "unknown authority"}},
		{"no CA", testkit.SetEnv(good, "CONSUL_CACERT="),
			[]string{"set CONSUL_CACERT", "unknown authority"}},
		{"name not in the certificate", testkit.SetEnv(good, "CONSUL_TLS_SERVER_NAME=consul.example.org"),
			[]string{"not valid for consul.example.org", "CONSUL_TLS_SERVER_NAME"}},
		{"no client certificate", testkit.SetEnv(good, "CONSUL_CLIENT_CERT=", "CONSUL_CLIENT_KEY="),
			[]string{"requires a client certificate", "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"}},
		{"client certificate from another CA", testkit.SetEnv(good, "CONSUL_CLIENT_CERT="+strangerCert, "CONSUL_CLIENT_KEY="+strangerKey),
			[]string{"refused the client certificate in CONSUL_CLIENT_CERT=" + strangerCert}},
		{"plain HTTP to HTTPS", testkit.SetEnv(good, "CONSUL_HTTP_ADDR=http://"+agent.Addr),
			[]string{"set CONSUL_HTTP_SSL=true"}},
		{"HTTPS to plain HTTP", testkit.SetEnv(good, "CONSUL_HTTP_ADDR=https://"+strings.TrimPrefix(plain.URL, "http://")),
			[]string{"does not serve HTTPS", "CONSUL_HTTP_SSL"}},
		{"no token", testkit.SetEnv(good, "CONSUL_HTTP_TOKEN="),
			[]string{"no token (CONSUL_HTTP_TOKEN is empty)", "Permission denied"}},
		{"unknown token", testkit.SetEnv(good, "CONSUL_HTTP_TOKEN="+unknownToken),
			[]string{"does not know the token in CONSUL_HTTP_TOKEN", "ACL not found"}},
		{"unknown token in a file", testkit.SetEnv(good, "CONSUL_HTTP_TOKEN_FILE="+unknownTokenFile),
			[]string{"does not know the token in the file CONSUL_HTTP_TOKEN_FILE=" + unknownTokenFile}},
		{"unknown token beside an empty token file", testkit.SetEnv(good, "CONSUL_HTTP_TOKEN="+unknownToken, "CONSUL_HTTP_TOKEN_FILE="+emptyTokenFile),
			[]string{"does not know the token in CONSUL_HTTP_TOKEN (", "ACL not found"}},
		{"token without the right", testkit.SetEnv(good, "CONSUL_HTTP_TOKEN="+otherPrefix),
			[]string{"the token in CONSUL_HTTP_TOKEN lacks permission", "Permission denied"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := storeFromEnv(t, tc.env)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			calls := map[string]func() error{
				"put":        func() error { return s.Put(ctx, "felt/x", []byte("v")) },
				"cas":        func() error { return s.CAS(ctx, "felt/x", []byte("v"), 0) },
				"delete-cas": func() error { return s.DeleteCAS(ctx, "felt/x", 1) },
				"get":        func() error { _, err := s.Get(ctx, "felt/x"); return err },
			}
			if !strings.Contains(tc.name, "token") {
				// Listings under default deny are filtered rather than
				// refused (an empty list), so only connection-level
				// failures show on them.
				calls["list"] = func() error { _, _, err := s.List(ctx, "felt/"); return err }
				calls["wait"] = func() error { _, _, err := s.Wait(ctx, "felt/", 5); return err }
			}
			for op, call := range calls {
				err := call()
				if err == nil {
					t.Errorf("%s: no error", op)
					continue
				}
				msg := err.Error()
				if op == "put" {
					t.Logf("put: %s", msg) // what a user sees, for the docs
				}
				for _, w := range append([]string{"consul " + s.Addr() + ": "}, tc.want...) {
					if !strings.Contains(msg, w) {
						t.Errorf("%s: error %q\ndoes not say %q", op, msg, w)
					}
				}
				for _, secret := range []string{agent.Token, otherPrefix, unknownToken} {
					if strings.Contains(msg, secret) {
						t.Errorf("%s: error shows a token: %s", op, msg)
					}
				}
				if errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrNotFound) {
					t.Errorf("%s: a settings error reported as %v", op, err)
				}
			}
		})
	}
}

// Files that cannot be read are reported when the store is built, naming
// the variable that points at them.
func TestMissingTLSFilesNameTheVariable(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.pem")
	ca := consul.NewCA(t, dir, "ca")
	cert, key := ca.ClientCert(t, "client")
	notPEM := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"CONSUL_HTTP_ADDR=https://127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"CA file missing", testkit.SetEnv(base, "CONSUL_CACERT="+missing), "CONSUL_CACERT=" + missing},
		{"CA file not PEM", testkit.SetEnv(base, "CONSUL_CACERT="+notPEM), "CONSUL_CACERT=" + notPEM},
		{"client cert missing", testkit.SetEnv(base, "CONSUL_CLIENT_CERT="+missing, "CONSUL_CLIENT_KEY="+key), "CONSUL_CLIENT_CERT=" + missing},
		{"client key missing", testkit.SetEnv(base, "CONSUL_CLIENT_CERT="+cert, "CONSUL_CLIENT_KEY="+missing), "CONSUL_CLIENT_KEY=" + missing},
		{"cert without key", testkit.SetEnv(base, "CONSUL_CLIENT_CERT="+cert), "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together"},
		{"token file missing", testkit.SetEnv(base, "CONSUL_HTTP_TOKEN_FILE="+missing), "CONSUL_HTTP_TOKEN_FILE=" + missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := storeFromEnv(t, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "consul 127.0.0.1:1: ") {
				t.Fatalf("New: %v; want an error naming %q and the address", err, tc.want)
			}
		})
	}
}
