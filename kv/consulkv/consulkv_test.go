package consulkv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/kvtest"
	"github.com/felt-net/felt/testkit/consul"
)

func newStore(t testing.TB, addr string) *Store {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", addr, err)
	}
	return s
}

func TestContract(t *testing.T) {
	// One agent for the whole suite: kvtest keeps each subtest under its
	// own key root.
	agent := consul.Start(t, consul.Options{})
	kvtest.Run(t, func(t *testing.T) kv.Store { return newStore(t, agent.Addr) })
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnreachableErrorsNameAddress(t *testing.T) {
	addr := closedAddr(t)
	s := newStore(t, addr)
	if s.Addr() != addr {
		t.Fatalf("Addr() = %q; want %q", s.Addr(), addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := s.Get(ctx, "felt/x")
	want := fmt.Sprintf("consul %s: get felt/x: ", addr)
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Get error = %v; want prefix %q", err, want)
	}
	if errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("unreachable Consul reported as ErrNotFound: %v", err)
	}

	calls := map[string]func() error{
		"list":       func() error { _, _, err := s.List(ctx, "felt/"); return err },
		"put":        func() error { return s.Put(ctx, "felt/x", []byte("v")) },
		"cas":        func() error { return s.CAS(ctx, "felt/x", []byte("v"), 0) },
		"delete":     func() error { return s.Delete(ctx, "felt/x") },
		"delete-cas": func() error { return s.DeleteCAS(ctx, "felt/x", 1) },
		"wait":       func() error { _, _, err := s.Wait(ctx, "felt/", 5); return err },
	}
	for op, call := range calls {
		err := call()
		if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), op) {
			t.Errorf("%s error = %v; want it to name %s and the operation", op, err, addr)
		}
		if errors.Is(err, kv.ErrConflict) {
			t.Errorf("%s: unreachable Consul reported as ErrConflict: %v", op, err)
		}
	}
}

func TestNewUsesConsulEnvironment(t *testing.T) {
	addr := closedAddr(t)
	t.Setenv("CONSUL_HTTP_ADDR", "https://"+addr)
	s, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Fatalf("Addr() with CONSUL_HTTP_ADDR=https://%s is %q; want %q", addr, s.Addr(), addr)
	}
}

// When Consul goes away, a blocked Wait must fail (naming Consul) instead of
// hanging, and the same store must work again once Consul is back.
func TestWaitAcrossOutage(t *testing.T) {
	agent := consul.Start(t, consul.Options{Persistent: true})
	s := newStore(t, agent.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	idx, done := waitAfterPut(t, ctx, s, "felt/w/", "1")
	time.Sleep(200 * time.Millisecond)
	agent.Stop()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), agent.Addr) {
			t.Fatalf("Wait during outage = %v; want an error naming %s", err, agent.Addr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait still blocked 30s after Consul stopped")
	}

	agent.Restart()
	p, err := s.Get(ctx, "felt/w/a")
	if err != nil || string(p.Value) != "1" {
		t.Fatalf("Get after restart = %+v, %v; want value 1", p, err)
	}
	// The index survived too, so the old one still blocks until a write.
	_, idx2, err := s.List(ctx, "felt/w/")
	if err != nil {
		t.Fatal(err)
	}
	if idx2 != idx {
		t.Fatalf("prefix index after restart = %d; want %d", idx2, idx)
	}
}

// A Consul that lost its data (here: a -dev agent restarted) comes back with
// a lower index. Wait on the old, higher index must notice at once and hand
// back the fresh state, not block for WaitTime.
func TestWaitIndexGoesBackwards(t *testing.T) {
	agent := consul.Start(t, consul.Options{})
	s := newStore(t, agent.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for i := range 100 {
		if err := s.Put(ctx, fmt.Sprintf("felt/b/%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	_, idx, err := s.List(ctx, "felt/b/")
	if err != nil {
		t.Fatal(err)
	}
	agent.Restart() // -dev: empty again, index starts over

	start := time.Now()
	pairs, idx2, err := s.Wait(ctx, "felt/b/", idx)
	if err != nil {
		t.Fatalf("Wait after data loss: %v", err)
	}
	if idx2 >= idx || len(pairs) != 0 {
		t.Fatalf("Wait after data loss = %d pairs, index %d; want none, index below %d", len(pairs), idx2, idx)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Wait after data loss took %s", d)
	}
}

// A Consul that lost its data and has since been written to again (the
// other hosts writing their leases back) has a KV table index above the
// caller's while the prefix's own index is below it, its records not the
// ones the caller knows. Wait must answer at once, as its index differs:
// checking the table's index alone sent it into a blocking query on an
// index the prefix had not reached, which slept its whole WaitTime (5
// minutes), the restored records unseen.
func TestWaitIndexBackwardsThenWrittenPast(t *testing.T) {
	agent := consul.Start(t, consul.Options{})
	s := newStore(t, agent.Addr)
	s.WaitTime = 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for i := range 50 {
		if err := s.Put(ctx, fmt.Sprintf("felt/b/%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	_, idx, err := s.List(ctx, "felt/b/")
	if err != nil {
		t.Fatal(err)
	}
	agent.Restart() // -dev: empty again, index starts over
	if err := s.Put(ctx, "felt/b/new", []byte("y")); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ { // other prefixes written until the table passes idx
		_, table, err := s.List(ctx, "felt/other/")
		if err != nil {
			t.Fatal(err)
		}
		if table > idx {
			break
		}
		if err := s.Put(ctx, fmt.Sprintf("felt/other/%d", i), []byte("z")); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	pairs, idx2, err := s.Wait(wctx, "felt/b/", idx)
	if err != nil {
		t.Fatalf("Wait after data loss and new writes: %v (after %s)", err, time.Since(start))
	}
	if idx2 >= idx || len(pairs) != 1 || pairs[0].Key != "felt/b/new" {
		t.Fatalf("Wait = %v, index %d; want felt/b/new, index below %d", pairs, idx2, idx)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Wait took %s", d)
	}
}

// Wait's first read folds keys at a separator (keysSep); the index it
// answers must still be the prefix's, taken over the folded keys too: else
// Wait after the current index, with the newest key a folded one, would
// list the prefix twice, once to find its index differs and once blocking.
func TestWaitFoldedKeysIndex(t *testing.T) {
	agent := consul.Start(t, consul.Options{})
	cfg := api.DefaultConfig()
	cfg.Address = agent.Addr
	rt := &countingTransport{base: http.DefaultTransport}
	cfg.HttpClient = &http.Client{Transport: rt}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, k := range []string{"felt/f/10.2.0.0-24", "felt/f/10.1.0.0-24", "felt/g/x"} {
		if err := s.Put(ctx, k, []byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	_, idx, err := s.List(ctx, "felt/f/")
	if err != nil {
		t.Fatal(err)
	}
	before := rt.listings()
	go func() {
		time.Sleep(500 * time.Millisecond)
		s.Put(ctx, "felt/f/10.2.0.0-24", []byte("2"))
	}()
	pairs, idx2, err := s.Wait(ctx, "felt/f/", idx)
	if err != nil || idx2 <= idx || len(pairs) != 2 || string(pairs[1].Value) != "2" {
		t.Fatalf("Wait = %v, %d, %v; want the new value, index above %d", pairs, idx2, err, idx)
	}
	if n := rt.listings() - before; n != 1 {
		t.Fatalf("Wait at the prefix's index listed it %d times; want 1 (blocking)", n)
	}
}

// countingTransport counts the listings (recurse reads) it carries.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	n    int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Has("recurse") {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
	return c.base.RoundTrip(r)
}

func (c *countingTransport) listings() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

// ACLs through Consul's standard variable: with default-deny ACLs, a store
// built from api.DefaultConfig() works when CONSUL_HTTP_TOKEN holds a token,
// and is refused (naming the address) without one.
func TestACLTokenFromEnvironment(t *testing.T) {
	const token = "3f1c2c4e-6f9a-4d1b-9a53-5f0c2d7e8a11"
	agent := consul.Start(t, consul.Options{Args: []string{
		"-hcl", `acl { enabled = true default_policy = "deny" tokens { initial_management = "` + token + `" } }`,
	}, Token: token})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Setenv("CONSUL_HTTP_ADDR", agent.Addr)
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	anon, err := New(api.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	err = anon.Put(ctx, "felt/acl-test", []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "consul "+agent.Addr) || !strings.Contains(err.Error(), "403") {
		t.Fatalf("put without a token: %v; want a 403 naming %s", err, agent.Addr)
	}

	t.Setenv("CONSUL_HTTP_TOKEN", token)
	s, err := New(api.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "felt/acl-test", []byte("x")); err != nil {
		t.Fatalf("put with CONSUL_HTTP_TOKEN: %v", err)
	}
	if p, err := s.Get(ctx, "felt/acl-test"); err != nil || string(p.Value) != "x" {
		t.Fatalf("get with CONSUL_HTTP_TOKEN: %v %v", p, err)
	}
}

// After this host's address changes, requests on connections made from the
// old one would hang: ResetConnections aborts them, a blocking Wait
// included, with an error saying so, and the next request works.
func TestResetConnectionsAbortsWait(t *testing.T) {
	agent := consul.Start(t, consul.Options{})
	s := newStore(t, agent.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	idx, done := waitAfterPut(t, ctx, s, "felt/r/", "x") // blocks: nothing changes
	select {
	case err := <-done:
		t.Fatalf("Wait returned before any change: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	s.ResetConnections()
	select {
	case err := <-done:
		want := fmt.Sprintf("consul %s: wait felt/r/ after index %d: ", agent.Addr, idx)
		if !errors.Is(err, ErrReset) || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("Wait after reset: %v; want ErrReset, prefixed %q", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait still blocked after ResetConnections")
	}
	if _, err := s.Get(ctx, "felt/r/a"); err != nil {
		t.Fatalf("Get after reset: %v", err)
	}
	// A caller's own cancel is still reported as such.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, _, err := s.Wait(cctx, "felt/r/", idx); !errors.Is(err, context.Canceled) || errors.Is(err, ErrReset) {
		t.Fatalf("Wait with a canceled context: %v", err)
	}
}

// waitAfterPut writes value at prefix+"a" and starts a Wait on prefix from
// the index that write left (which blocks until the next change); done gets
// the Wait's error.
func waitAfterPut(t *testing.T, ctx context.Context, s *Store, prefix, value string) (idx uint64, done <-chan error) {
	t.Helper()
	if err := s.Put(ctx, prefix+"a", []byte(value)); err != nil {
		t.Fatal(err)
	}
	_, idx, err := s.List(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() {
		_, _, err := s.Wait(ctx, prefix, idx)
		ch <- err
	}()
	return idx, ch
}
