package consul

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func put(t *testing.T, addr, key, value string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+addr+"/v1/kv/"+key, strings.NewReader(value))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "true" {
		t.Fatalf("put %s: %s %s", key, resp.Status, body)
	}
}

// get returns the raw value, or "" with found=false on 404.
func get(t *testing.T, addr, key string) (value string, found bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v1/kv/" + key + "?raw")
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		return string(body), true
	case http.StatusNotFound:
		return "", false
	}
	t.Fatalf("get %s: %s %s", key, resp.Status, body)
	return "", false
}

func TestDevAgent(t *testing.T) {
	a := Start(t, Options{})
	if host, _, err := net.SplitHostPort(a.Addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr = %q; want 127.0.0.1:port", a.Addr)
	}
	put(t, a.Addr, "felt/x", "hello")
	if v, ok := get(t, a.Addr, "felt/x"); !ok || v != "hello" {
		t.Fatalf("get felt/x = %q, %v; want hello", v, ok)
	}

	a.Stop()
	if _, err := net.DialTimeout("tcp", a.Addr, time.Second); err == nil {
		t.Fatalf("%s still accepts connections after Stop", a.Addr)
	}
	a.Stop() // idempotent

	// -dev keeps Raft in memory: a restart comes back empty, same address.
	addr := a.Addr
	a.Restart()
	if a.Addr != addr {
		t.Fatalf("Addr changed across Restart: %s -> %s", addr, a.Addr)
	}
	if v, ok := get(t, a.Addr, "felt/x"); ok {
		t.Fatalf("dev agent kept felt/x = %q across restart", v)
	}
}

func TestPersistentAgentKeepsDataAcrossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("leader re-election takes seconds")
	}
	a := Start(t, Options{Persistent: true})
	put(t, a.Addr, "felt/y", "kept")
	a.Restart()
	if v, ok := get(t, a.Addr, "felt/y"); !ok || v != "kept" {
		t.Fatalf("after restart felt/y = %q, %v; want kept", v, ok)
	}
}

func TestTwoAgentsDoNotCollide(t *testing.T) {
	a := Start(t, Options{})
	b := Start(t, Options{})
	if a.Addr == b.Addr {
		t.Fatalf("two agents share %s", a.Addr)
	}
	put(t, a.Addr, "felt/who", "a")
	if _, ok := get(t, b.Addr, "felt/who"); ok {
		t.Fatal("agent b sees agent a's key")
	}
}

// TestNetNS runs the agent on the loopback of a fresh network namespace:
// reachable from inside it, not from the test's own namespace.
func TestNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for ip netns")
	}
	ns := fmt.Sprintf("felt-tc-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", ns, err, out)
	}

	a := Start(t, Options{NetNS: ns, Bind: "127.0.0.1", Client: "127.0.0.1"})
	consul := func(args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns, Binary(t)}, args...)...)
		cmd.Env = append(agentEnv(), "CONSUL_HTTP_ADDR="+a.Addr)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := consul("kv", "put", "felt/ns", "inside"); err != nil {
		t.Fatalf("kv put inside %s: %v: %s", ns, err, out)
	}
	if out, err := consul("kv", "get", "felt/ns"); err != nil || out != "inside" {
		t.Fatalf("kv get inside %s = %q, %v; want inside", ns, out, err)
	}
	if c, err := net.DialTimeout("tcp", a.Addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s reachable outside namespace %s", a.Addr, ns)
	}

	a.Restart()
	if out, err := consul("kv", "get", "felt/ns"); err == nil {
		t.Fatalf("-dev agent kept felt/ns = %q across restart", out)
	}
}

// tlsClient is an HTTPS client trusting caFile, presenting the client
// certificate when certFile is set.
func tlsClient(t *testing.T, caFile, certFile, keyFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", caFile)
	}
	cfg := &tls.Config{RootCAs: pool}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

// TestTLSAndACLAgent: HTTPS only, client certificates required and checked,
// default-deny ACLs. Each missing piece is refused; all of them together
// (ClientEnv's) work, and so does a token CreateToken makes.
func TestTLSAndACLAgent(t *testing.T) {
	a := Start(t, Options{TLS: true, ACL: true})
	if a.TLS == nil || a.Token == "" || !strings.HasPrefix(a.URL(), "https://") {
		t.Fatalf("TLS agent: files %+v, token %q, URL %s", a.TLS, a.Token, a.URL())
	}
	do := func(c *http.Client, method, token, key, body string) (int, string, error) {
		req, err := http.NewRequest(method, a.URL()+"/v1/kv/"+key+"?raw", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("X-Consul-Token", token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b)), nil
	}
	full := tlsClient(t, a.TLS.CA.CertFile, a.TLS.ClientCert, a.TLS.ClientKey)
	if code, body, err := do(full, http.MethodPut, a.Token, "felt/t", "v"); err != nil || code != 200 {
		t.Fatalf("put with certificate and token: %d %s %v", code, body, err)
	}
	if code, body, err := do(full, http.MethodGet, a.Token, "felt/t", ""); err != nil || code != 200 || body != "v" {
		t.Fatalf("get with certificate and token: %d %q %v", code, body, err)
	}

	// No token: ACLs deny.
	if code, body, err := do(full, http.MethodPut, "", "felt/t", "x"); err != nil || code != http.StatusForbidden {
		t.Fatalf("put without a token: %d %s %v; want 403", code, body, err)
	}
	// No client certificate: the TLS handshake is refused.
	if code, body, err := do(tlsClient(t, a.TLS.CA.CertFile, "", ""), http.MethodGet, a.Token, "felt/t", ""); err == nil {
		t.Fatalf("get without a client certificate: %d %s; want a TLS error", code, body)
	}
	// A client certificate from another CA: refused too.
	other := NewCA(t, t.TempDir(), "other-ca")
	oc, ok := other.ClientCert(t, "stranger")
	if code, body, err := do(tlsClient(t, a.TLS.CA.CertFile, oc, ok), http.MethodGet, a.Token, "felt/t", ""); err == nil {
		t.Fatalf("get with a stranger's client certificate: %d %s; want a TLS error", code, body)
	}
	// Trusting another CA: the server's certificate is refused.
	if _, _, err := do(tlsClient(t, other.CertFile, a.TLS.ClientCert, a.TLS.ClientKey), http.MethodGet, a.Token, "felt/t", ""); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("get trusting another CA: %v; want unknown authority", err)
	}
	// Plain HTTP: the port speaks only TLS.
	if resp, err := http.Get("http://" + a.Addr + "/v1/kv/felt/t"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served")
		}
	}

	// A token for felt's prefix only.
	tok := a.CreateToken("felt-rw", `key_prefix "felt/" { policy = "write" }`)
	if code, body, err := do(full, http.MethodPut, tok, "felt/u", "w"); err != nil || code != 200 {
		t.Fatalf("put under felt/ with the felt token: %d %s %v", code, body, err)
	}
	if code, body, err := do(full, http.MethodPut, tok, "other/u", "w"); err != nil || code != http.StatusForbidden {
		t.Fatalf("put outside felt/ with the felt token: %d %s %v; want 403", code, body, err)
	}
	if got := a.CLI([]string{"kv", "get"}, "felt/u"); got != "w" {
		t.Fatalf("consul kv get felt/u = %q; want w", got)
	}
}
