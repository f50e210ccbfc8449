package storeformat

import (
	"context"
	"sync"

	"github.com/felt-net/felt/kv"
)

// Guard returns a.Store with a.Ensure run before its first write: for the
// shared store, which felt must not contact at start (it serves existing
// containers while Consul is down), yet must never write in a format it does
// not know. Reads pass straight through. Until Ensure succeeds every write
// tries it again and fails with its error (an unreachable Consul, or a
// *TooNewError); after that, writes cost nothing extra.
func Guard(a Area) kv.Store { return &guarded{Store: a.Store, area: a} }

type guarded struct {
	kv.Store
	area Area

	// mu makes concurrent first writes wait for one Ensure.
	mu      sync.Mutex
	checked bool
}

func (g *guarded) ensure(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.checked {
		return nil
	}
	if _, err := g.area.Ensure(ctx); err != nil {
		// Never a kv.ErrConflict (Ensure sees to it): the caller would
		// take it for a conflict on its own key.
		return noConflict(err)
	}
	g.checked = true
	return nil
}

func (g *guarded) Put(ctx context.Context, key string, value []byte) error {
	if err := g.ensure(ctx); err != nil {
		return err
	}
	return g.Store.Put(ctx, key, value)
}

func (g *guarded) CAS(ctx context.Context, key string, value []byte, index uint64) error {
	if err := g.ensure(ctx); err != nil {
		return err
	}
	return g.Store.CAS(ctx, key, value, index)
}

func (g *guarded) Delete(ctx context.Context, key string) error {
	if err := g.ensure(ctx); err != nil {
		return err
	}
	return g.Store.Delete(ctx, key)
}

func (g *guarded) DeleteCAS(ctx context.Context, key string, index uint64) error {
	if err := g.ensure(ctx); err != nil {
		return err
	}
	return g.Store.DeleteCAS(ctx, key, index)
}

func (g *guarded) Txn(ctx context.Context, ops []kv.Op) (uint64, error) {
	if err := g.ensure(ctx); err != nil {
		return 0, err
	}
	return g.Store.Txn(ctx, ops)
}
