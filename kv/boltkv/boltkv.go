// Package boltkv is an embedded kv.Store on bbolt, used for felt's local host
// state and, when no Consul is configured, for the shared state too.
//
// It mimics Consul's index model so callers cannot tell the two apart: one
// store-wide index, persisted in the database, is bumped by every write, and
// each key remembers the index of its last write as its ModifyIndex.
package boltkv

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/felt-net/felt/kv"
)

// openTimeout bounds how long Open waits for the file lock, so a second felt
// process on the same file gets an error instead of hanging forever.
const openTimeout = 2 * time.Second

var (
	// kvBucket maps key -> 8-byte big-endian ModifyIndex followed by the value.
	kvBucket = []byte("kv")
	// metaBucket holds the store's counters.
	metaBucket = []byte("meta")
	// indexKey is the store-wide index: the index of the last write.
	indexKey = []byte("index")
	// deleteKey is the index of the last delete anywhere. A delete leaves no
	// key behind whose ModifyIndex could show it, so every prefix's index
	// takes it into account (see prefixIndex); deletes elsewhere thus cause
	// harmless spurious wake-ups, never missed ones.
	deleteKey = []byte("lastdelete")
)

// Store is a kv.Store on a bbolt file. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string

	// mu guards changed, which is closed and replaced after every committed
	// write to wake Wait callers, who then re-check their prefix.
	mu      sync.Mutex
	changed chan struct{}
}

var _ kv.Store = (*Store)(nil)

// Open opens (creating if needed) the store at path, and its parent directory.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open kv store %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: openTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open kv store %s: file is locked by another process (is another felt running?) after waiting %s: %w", path, openTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open kv store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{kvBucket, metaBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open kv store %s: create buckets: %w", path, err)
	}
	return &Store{db: db, path: path, changed: make(chan struct{})}, nil
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// Close closes the database. Pending Wait calls return an error.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close kv store %s: %w", s.path, err)
	}
	s.notify()
	return nil
}

// Get returns the pair at key, or kv.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (kv.Pair, error) {
	var p kv.Pair
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(kvBucket).Get([]byte(key))
		if raw == nil {
			return kv.ErrNotFound
		}
		var err error
		p, err = decode(key, raw)
		return err
	})
	if err != nil {
		return kv.Pair{}, fmt.Errorf("get %s: %w", key, err)
	}
	return p, nil
}

// List returns the pairs under prefix, sorted by key, and the prefix's index.
func (s *Store) List(ctx context.Context, prefix string) ([]kv.Pair, uint64, error) {
	var pairs []kv.Pair
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		pairs, idx, err = list(tx, prefix)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", prefix, err)
	}
	return pairs, idx, nil
}

// Put writes value at key unconditionally.
func (s *Store) Put(ctx context.Context, key string, value []byte) error {
	err := s.update(func(tx *bolt.Tx) (bool, error) {
		return true, put(tx, key, value)
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// CAS writes value at key only if its ModifyIndex is index (0: absent).
func (s *Store) CAS(ctx context.Context, key string, value []byte, index uint64) error {
	err := s.update(func(tx *bolt.Tx) (bool, error) {
		cur, err := modifyIndex(tx, key)
		if err != nil {
			return false, err
		}
		if cur != index {
			return false, kv.ErrConflict
		}
		return true, put(tx, key, value)
	})
	if err != nil {
		return fmt.Errorf("cas %s at index %d: %w", key, index, err)
	}
	return nil
}

// Delete removes key; a missing key is not an error and not a write.
func (s *Store) Delete(ctx context.Context, key string) error {
	err := s.update(func(tx *bolt.Tx) (bool, error) {
		cur, err := modifyIndex(tx, key)
		if err != nil || cur == 0 {
			return false, err
		}
		return true, del(tx, key)
	})
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// DeleteCAS removes key only if its ModifyIndex is index; a missing key (or
// index 0) is kv.ErrConflict.
func (s *Store) DeleteCAS(ctx context.Context, key string, index uint64) error {
	err := s.update(func(tx *bolt.Tx) (bool, error) {
		cur, err := modifyIndex(tx, key)
		if err != nil {
			return false, err
		}
		if cur == 0 || cur != index {
			return false, kv.ErrConflict
		}
		return true, del(tx, key)
	})
	if err != nil {
		return fmt.Errorf("delete-cas %s at index %d: %w", key, index, err)
	}
	return nil
}

// Txn applies ops in one bbolt transaction: a failed condition returns
// kv.ErrConflict from inside it, which rolls every earlier op back. As in
// Consul, the transaction's writes share one index, and each condition sees
// the ops before it.
func (s *Store) Txn(ctx context.Context, ops []kv.Op) (uint64, error) {
	if err := checkOps(ops); err != nil {
		return 0, err
	}
	var idx uint64
	err := s.update(func(tx *bolt.Tx) (bool, error) {
		// One index for every write: taken at the first.
		index := func() (uint64, error) {
			if idx != 0 {
				return idx, nil
			}
			var err error
			idx, err = bump(tx)
			return idx, err
		}
		for i, op := range ops {
			cur, err := modifyIndex(tx, op.Key)
			if err != nil {
				return false, err
			}
			switch op.Verb {
			case kv.OpPut, kv.OpCAS:
				if op.Verb == kv.OpCAS && cur != op.Index {
					return false, fmt.Errorf("op %d: cas %s at index %d: %w", i, op.Key, op.Index, kv.ErrConflict)
				}
				at, err := index()
				if err != nil {
					return false, err
				}
				if err := putAt(tx, op.Key, op.Value, at); err != nil {
					return false, err
				}
			case kv.OpDeleteCAS:
				if cur == 0 || cur != op.Index {
					return false, fmt.Errorf("op %d: delete-cas %s at index %d: %w", i, op.Key, op.Index, kv.ErrConflict)
				}
				at, err := index()
				if err != nil {
					return false, err
				}
				if err := delAt(tx, op.Key, at); err != nil {
					return false, err
				}
			case kv.OpCheck:
				if cur != op.Index {
					return false, fmt.Errorf("op %d: check %s at index %d: %w", i, op.Key, op.Index, kv.ErrConflict)
				}
			case kv.OpDelete:
				if cur == 0 {
					continue // as Delete: nothing to write
				}
				at, err := index()
				if err != nil {
					return false, err
				}
				if err := delAt(tx, op.Key, at); err != nil {
					return false, err
				}
			}
		}
		return idx != 0, nil
	})
	if err != nil {
		return 0, fmt.Errorf("txn: %w", err)
	}
	return idx, nil
}

// checkOps refuses a transaction no store would run: too many ops, an
// unknown verb, an empty key.
func checkOps(ops []kv.Op) error {
	if len(ops) > kv.MaxTxnOps {
		return fmt.Errorf("txn: %d ops, at most %d", len(ops), kv.MaxTxnOps)
	}
	for i, op := range ops {
		if op.Verb < kv.OpPut || op.Verb > kv.OpDelete {
			return fmt.Errorf("txn: op %d: unknown verb %d", i, op.Verb)
		}
		if op.Key == "" {
			return fmt.Errorf("txn: op %d: empty key", i)
		}
	}
	return nil
}

// Wait blocks until the index of prefix is above index, or ctx ends, then
// answers as List. Like a Consul blocking query, index 0 never blocks.
func (s *Store) Wait(ctx context.Context, prefix string, index uint64) ([]kv.Pair, uint64, error) {
	for {
		// Take the channel before reading, so a write committed after the
		// read closes a channel we already hold and cannot be missed.
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()

		pairs, idx, err := s.List(ctx, prefix)
		if err != nil {
			return nil, 0, fmt.Errorf("wait: %w", err)
		}
		if index == 0 || idx > index {
			return pairs, idx, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("wait %s after index %d: %w", prefix, index, ctx.Err())
		}
	}
}

// update runs fn in a write transaction and, if fn reports that it wrote,
// wakes waiters once the transaction has committed.
func (s *Store) update(fn func(tx *bolt.Tx) (wrote bool, err error)) error {
	var wrote bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		wrote, err = fn(tx)
		return err
	})
	if err == nil && wrote {
		s.notify()
	}
	return err
}

func (s *Store) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// list returns the pairs under prefix and the prefix's index: the highest
// ModifyIndex among them or the last delete anywhere, whichever is later.
// That value only grows, and grows on every change under prefix, which is
// what Wait needs. Like Consul it is never 0, so it is always safe to pass
// back to Wait.
func list(tx *bolt.Tx, prefix string) ([]kv.Pair, uint64, error) {
	idx := max(getUint(tx.Bucket(metaBucket), deleteKey), 1)
	var pairs []kv.Pair
	c := tx.Bucket(kvBucket).Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		pair, err := decode(string(k), v)
		if err != nil {
			return nil, 0, err
		}
		pairs = append(pairs, pair)
		idx = max(idx, pair.ModifyIndex)
	}
	return pairs, idx, nil
}

// modifyIndex returns key's ModifyIndex, or 0 if it does not exist.
func modifyIndex(tx *bolt.Tx, key string) (uint64, error) {
	raw := tx.Bucket(kvBucket).Get([]byte(key))
	if raw == nil {
		return 0, nil
	}
	p, err := decode(key, raw)
	return p.ModifyIndex, err
}

func put(tx *bolt.Tx, key string, value []byte) error {
	idx, err := bump(tx)
	if err != nil {
		return err
	}
	return putAt(tx, key, value, idx)
}

// putAt writes value at key with ModifyIndex idx, an index bump returned.
func putAt(tx *bolt.Tx, key string, value []byte, idx uint64) error {
	if key == "" {
		return errors.New("empty key")
	}
	raw := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(raw, idx)
	copy(raw[8:], value)
	return tx.Bucket(kvBucket).Put([]byte(key), raw)
}

func del(tx *bolt.Tx, key string) error {
	idx, err := bump(tx)
	if err != nil {
		return err
	}
	return delAt(tx, key, idx)
}

// delAt removes key as a write at index idx, an index bump returned.
func delAt(tx *bolt.Tx, key string, idx uint64) error {
	if err := putUint(tx.Bucket(metaBucket), deleteKey, idx); err != nil {
		return err
	}
	return tx.Bucket(kvBucket).Delete([]byte(key))
}

// bump increments and returns the store-wide index. It is never 1: an
// empty prefix answers index 1 (list), and a Wait after 1 there must see
// the store's very first write.
func bump(tx *bolt.Tx) (uint64, error) {
	meta := tx.Bucket(metaBucket)
	idx := max(getUint(meta, indexKey)+1, 2)
	return idx, putUint(meta, indexKey, idx)
}

func getUint(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, key []byte, v uint64) error {
	buf := make([]byte, 8)
	binary.BigEndian.PutUint64(buf, v)
	return b.Put(key, buf)
}

// decode copies the stored value: bbolt's slices are only valid inside the
// transaction.
func decode(key string, raw []byte) (kv.Pair, error) {
	if len(raw) < 8 {
		return kv.Pair{}, fmt.Errorf("corrupt record for %s: %d bytes", key, len(raw))
	}
	return kv.Pair{
		Key:         key,
		Value:       bytes.Clone(raw[8:]),
		ModifyIndex: binary.BigEndian.Uint64(raw[:8]),
	}, nil
}
