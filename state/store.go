// Package state is the typed view of what this host persists about itself:
// JSON records in the embedded store under "local/". Docker never replays
// pools, networks or endpoints to a remote plugin, so everything a later
// Leave, DeleteEndpoint or Release needs must be found here after a restart.
//
// Both drivers read and write their records here, one file per record kind
// (networks.go, endpoints.go, pools.go, addresses.go, forget.go, hostid.go):
// the network driver finds the pool of a subnet in the IPAM's pool records,
// the IPAM finds the network of a pool in the driver's network records, and
// neither package imports the other. The key layout is this package's own;
// its format is storeformat.Local, so keys and JSON field names must not
// change without a migration step there.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/felt-net/felt/kv"
)

const root = "local/"

// Store reads and writes this host's records in a kv.Store. It adds no
// locking: each driver serialises its own calls.
type Store struct{ kv kv.Store }

// New wraps s.
func New(s kv.Store) *Store { return &Store{kv: s} }

// Key joins parts under the local root; Key() is the root itself, the
// prefix storeformat checks and FELT_KV_PREFIX must stay clear of.
func Key(parts ...string) string { return root + strings.Join(parts, "/") }

// get decodes the record at key into v; it reports false if absent.
func (s *Store) get(ctx context.Context, key string, v any) (bool, error) {
	p, err := s.kv.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state %s: %w", key, err)
	}
	if err := json.Unmarshal(p.Value, v); err != nil {
		return false, fmt.Errorf("state %s: %w", key, err)
	}
	return true, nil
}

// put writes v at key.
func (s *Store) put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("state %s: %w", key, err)
	}
	if err := s.kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("state %s: %w", key, err)
	}
	return nil
}

// create writes v at key only if the key is absent; it reports false if the
// key existed already.
func (s *Store) create(ctx context.Context, key string, v any) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, fmt.Errorf("state %s: %w", key, err)
	}
	err = s.kv.CAS(ctx, key, b, 0)
	if errors.Is(err, kv.ErrConflict) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state %s: %w", key, err)
	}
	return true, nil
}

// delete removes key; absent is fine.
func (s *Store) delete(ctx context.Context, key string) error {
	if err := s.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("state %s: %w", key, err)
	}
	return nil
}

// list decodes every record under prefix, in key order.
func list[T any](ctx context.Context, s *Store, prefix string) ([]T, error) {
	pairs, _, err := s.kv.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", prefix, err)
	}
	out := make([]T, 0, len(pairs))
	for _, p := range pairs {
		var v T
		if err := json.Unmarshal(p.Value, &v); err != nil {
			return nil, fmt.Errorf("state %s: %w", p.Key, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// keys lists the keys under prefix.
func (s *Store) keys(ctx context.Context, prefix string) ([]string, error) {
	pairs, _, err := s.kv.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", prefix, err)
	}
	keys := make([]string, len(pairs))
	for i, p := range pairs {
		keys[i] = p.Key
	}
	return keys, nil
}

// table is one kind of record: JSON values of T, one key per name under
// prefix. The accessors of each kind are thin over it.
type table[T any] struct {
	s      *Store
	prefix string
}

// get reads the record of name; it reports false if absent.
func (t table[T]) get(ctx context.Context, name string) (T, bool, error) {
	var v T
	ok, err := t.s.get(ctx, t.prefix+name, &v)
	return v, ok, err
}

// all lists every record, in key order.
func (t table[T]) all(ctx context.Context) ([]T, error) { return list[T](ctx, t.s, t.prefix) }

// find returns the first record, in key order, that match accepts; it
// reports false if none does.
func (t table[T]) find(ctx context.Context, match func(T) bool) (T, bool, error) {
	var zero T
	all, err := t.all(ctx)
	if err != nil {
		return zero, false, err
	}
	for _, v := range all {
		if match(v) {
			return v, true, nil
		}
	}
	return zero, false, nil
}

func (t table[T]) put(ctx context.Context, name string, v T) error {
	return t.s.put(ctx, t.prefix+name, v)
}

// create writes v as name's record unless one exists; it reports false if
// one did.
func (t table[T]) create(ctx context.Context, name string, v T) (bool, error) {
	return t.s.create(ctx, t.prefix+name, v)
}

// delete removes name's record; absent is fine.
func (t table[T]) delete(ctx context.Context, name string) error {
	return t.s.delete(ctx, t.prefix+name)
}
