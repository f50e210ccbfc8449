// Package state is the typed view of what this host persists about itself:
// JSON records in the embedded store under "local/". Docker never replays
// pools, networks or endpoints to a remote plugin, so everything a later
// Leave, DeleteEndpoint or Release needs must be found here after a restart.
package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/felt-net/felt/kv"
)

const root = "local/"

// Store reads and writes JSON records in a kv.Store.
type Store struct{ kv kv.Store }

// New wraps s.
func New(s kv.Store) *Store { return &Store{kv: s} }

// KV is the underlying store.
func (s *Store) KV() kv.Store { return s.kv }

// Key joins parts under the local root.
func Key(parts ...string) string { return root + strings.Join(parts, "/") }

// Get decodes the record at key into v; it reports false if absent.
func (s *Store) Get(ctx context.Context, key string, v any) (bool, error) {
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

// Put writes v at key.
func (s *Store) Put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("state %s: %w", key, err)
	}
	if err := s.kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("state %s: %w", key, err)
	}
	return nil
}

// Create writes v at key only if the key is absent; it reports false if the
// key existed already.
func (s *Store) Create(ctx context.Context, key string, v any) (bool, error) {
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

// Delete removes key; absent is fine.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("state %s: %w", key, err)
	}
	return nil
}

// List decodes every record under prefix with decode, in key order.
func List[T any](ctx context.Context, s *Store, prefix string) ([]T, error) {
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

// Keys lists the keys under prefix.
func (s *Store) Keys(ctx context.Context, prefix string) ([]string, error) {
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

// HostID returns this host's stable identity, creating it on first use. It
// names the host's leases, so a host whose IP changes keeps its subnets.
func (s *Store) HostID(ctx context.Context) (string, error) {
	key := Key("host-id")
	var id string
	if ok, err := s.Get(ctx, key, &id); err != nil || ok {
		return id, err
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	if _, err := s.Create(ctx, key, hex.EncodeToString(b)); err != nil {
		return "", err
	}
	_, err := s.Get(ctx, key, &id)
	return id, err
}
