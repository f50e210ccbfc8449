// Package kv is felt's view of a key-value store: enough of Consul's KV model
// (modify indexes, compare-and-set, blocking prefix queries) that the embedded
// store and Consul are interchangeable behind it.
package kv

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Get when the key does not exist.
var ErrNotFound = errors.New("key not found")

// ErrConflict is returned by CAS and DeleteCAS when the key changed (or
// exists, for a create) since the index the caller read.
var ErrConflict = errors.New("compare-and-set conflict")

// Pair is one key with its value and the index of its last modification.
type Pair struct {
	Key         string
	Value       []byte
	ModifyIndex uint64
}

// Store is a key-value store with compare-and-set and blocking prefix queries.
// Keys are slash-separated strings; implementations add no prefix of their own.
type Store interface {
	// Get returns the pair at key, or ErrNotFound.
	Get(ctx context.Context, key string) (Pair, error)
	// List returns every pair whose key starts with prefix, sorted by key,
	// and the store index the answer reflects (pass it to Wait).
	List(ctx context.Context, prefix string) ([]Pair, uint64, error)
	// Put writes value at key unconditionally.
	Put(ctx context.Context, key string, value []byte) error
	// CAS writes value at key only if the key's ModifyIndex is still index;
	// index 0 means "only if the key does not exist". Otherwise ErrConflict.
	CAS(ctx context.Context, key string, value []byte, index uint64) error
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// DeleteCAS removes key only if its ModifyIndex is still index,
	// otherwise ErrConflict. A missing key is ErrConflict too.
	DeleteCAS(ctx context.Context, key string, index uint64) error
	// Txn applies ops in order as one atomic step: all of them, or none
	// when a condition fails (ErrConflict; any other failure is another
	// error, and nothing is written either). Every write of one
	// transaction gets the same ModifyIndex, which Txn returns (0 if it
	// wrote nothing); but Consul skips a write of the bytes a key already
	// holds, whose index then stays. At most MaxTxnOps ops.
	Txn(ctx context.Context, ops []Op) (uint64, error)
	// Wait blocks until the data under prefix may have changed after index
	// (a return does not promise a change), or ctx ends, then answers as List.
	Wait(ctx context.Context, prefix string, index uint64) ([]Pair, uint64, error)
	// Close releases the store's resources.
	Close() error
}

// MaxTxnOps is the most ops one Txn may hold: Consul's limit on a
// transaction (64 operations, a delete-cas counting as two, see consulkv),
// held for every store so that code tested on one works on the other.
const MaxTxnOps = 32

// Verb is what an Op does.
type Verb int

const (
	// OpPut writes Value at Key unconditionally.
	OpPut Verb = iota + 1
	// OpCAS writes Value at Key only if its ModifyIndex is Index; 0 means
	// only if the key does not exist (as Store.CAS).
	OpCAS
	// OpDeleteCAS removes Key only if its ModifyIndex is Index; a missing
	// key fails (as Store.DeleteCAS).
	OpDeleteCAS
	// OpCheck writes nothing and fails unless Key's ModifyIndex is Index;
	// 0 means unless the key does not exist.
	OpCheck
	// OpDelete removes Key unconditionally; a missing key is no failure
	// (as Store.Delete), and no write.
	OpDelete
)

// Op is one operation of a transaction (Store.Txn).
type Op struct {
	Verb  Verb
	Key   string
	Value []byte // OpPut, OpCAS
	Index uint64 // OpCAS, OpDeleteCAS, OpCheck; not OpDelete
}

// ConnectionResetter is a Store that holds connections bound to this host's
// address (consulkv's to Consul; the embedded store has none). When the
// address changes, those connections are dead and a request on them would
// hang until its timeout: the renewal loop calls ResetConnections, which
// aborts what is in flight (a blocking Wait included, which its caller then
// retries on fresh connections) and drops idle ones.
type ConnectionResetter interface {
	ResetConnections()
}
