package lease_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/testkit/consul"
)

// What the lease tests share: stores, a fake clock, and a store that lets
// another host act at the worst moment.

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// newStore returns a fresh embedded store, closed when the test ends.
func newStore(t *testing.T) kv.Store {
	t.Helper()
	s, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// consulStore returns a store on a fresh Consul agent (bin/consul).
func consulStore(t *testing.T) kv.Store {
	t.Helper()
	s, err := consulkv.New(consul.Start(t, consul.Options{}).APIConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newRegistry returns a registry on a fresh embedded store, with a fake
// clock at 2026-01-01.
func newRegistry(t *testing.T) (*lease.Registry, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return lease.NewRegistry(newStore(t), "felt/", clk), clk
}

// eachStore runs test as the subtests "embedded" (newRegistry) and
// "consul" (a registry on Consul, with the system clock).
func eachStore(t *testing.T, test func(t *testing.T, r *lease.Registry)) {
	t.Run("embedded", func(t *testing.T) {
		r, _ := newRegistry(t)
		test(t, r)
	})
	t.Run("consul", func(t *testing.T) {
		test(t, lease.NewRegistry(consulStore(t), "felt/", nil))
	})
}

var pool = netip.MustParsePrefix("10.42.0.0/16")

func owner(id, ip string) lease.Owner {
	return lease.Owner{HostID: id, PublicIP: netip.MustParseAddr(ip)}
}

// hooked is a store that runs hook once, just before the first call of op
// ("Get", "CAS" or "DeleteCAS") on a key that when accepts: another host
// acting at the worst moment. Tests see that the race was staged by hook
// being nil afterwards.
type hooked struct {
	kv.Store
	op   string
	when func(key string, index uint64) bool
	hook func()
}

func (s *hooked) fire(op, key string, index uint64) {
	if h := s.hook; h != nil && op == s.op && s.when(key, index) {
		s.hook = nil
		h()
	}
}

func (s *hooked) Get(ctx context.Context, key string) (kv.Pair, error) {
	s.fire("Get", key, 0)
	return s.Store.Get(ctx, key)
}

func (s *hooked) CAS(ctx context.Context, key string, v []byte, index uint64) error {
	s.fire("CAS", key, index)
	return s.Store.CAS(ctx, key, v, index)
}

func (s *hooked) DeleteCAS(ctx context.Context, key string, index uint64) error {
	s.fire("DeleteCAS", key, index)
	return s.Store.DeleteCAS(ctx, key, index)
}

// Txn fires the hook as the ops would one by one: a lease is written in a
// transaction with its owner entries.
func (s *hooked) Txn(ctx context.Context, ops []kv.Op) (uint64, error) {
	for _, op := range ops {
		switch op.Verb {
		case kv.OpCAS:
			s.fire("CAS", op.Key, op.Index)
		case kv.OpDeleteCAS:
			s.fire("DeleteCAS", op.Key, op.Index)
		}
	}
	return s.Store.Txn(ctx, ops)
}

// under: any key with prefix.
func under(prefix string) func(string, uint64) bool {
	return func(key string, _ uint64) bool { return strings.HasPrefix(key, prefix) }
}

// updateUnder: an update (CAS at a non-zero index) of a key with prefix.
func updateUnder(prefix string) func(string, uint64) bool {
	return func(key string, index uint64) bool { return index != 0 && strings.HasPrefix(key, prefix) }
}

// createUnder: a create (CAS at index 0) of a key with prefix.
func createUnder(prefix string) func(string, uint64) bool {
	return func(key string, index uint64) bool { return index == 0 && strings.HasPrefix(key, prefix) }
}

// exactly: the key itself.
func exactly(k string) func(string, uint64) bool {
	return func(key string, _ uint64) bool { return key == k }
}
