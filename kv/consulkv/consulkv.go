// Package consulkv is kv.Store on Consul's KV API, for the state felt hosts
// share with each other.
//
// Connection settings come from the caller's *api.Config, normally
// api.DefaultConfig(), which already honours Consul's standard variables
// (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT, CONSUL_HTTP_SSL, ...),
// so ACLs and TLS work the way they do for the consul CLI. Every error names
// the Consul address, so an unreachable or misconfigured Consul is obvious,
// and an error caused by a setting (a wrong CA, a refused client
// certificate, a missing token) also names the variable to fix.
package consulkv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/felt-net/felt/kv"
)

// DefaultWaitTime is how long one blocking query may hang in Consul before
// it answers unchanged and Wait asks again. Consul caps it at 10 minutes.
const DefaultWaitTime = 5 * time.Minute

// Store is a kv.Store backed by Consul. It is safe for concurrent use.
type Store struct {
	kv   *api.KV
	txn  *api.Txn
	addr string
	http *http.Client
	// access explains errors caused by TLS or ACL settings.
	access access

	// WaitTime is the WaitTime of Wait's blocking queries.
	WaitTime time.Duration

	mu sync.Mutex
	// epoch ends at ResetConnections, and with it every request begun
	// before.
	epoch    context.Context
	endEpoch context.CancelFunc
}

var _ kv.Store = (*Store)(nil)

// New returns a store talking to the Consul agent cfg describes; nil means
// api.DefaultConfig(). It does not contact Consul, so a Consul that is down
// shows up on first use, not here.
func New(cfg *api.Config) (*Store, error) {
	if cfg == nil {
		cfg = api.DefaultConfig()
	}
	// Errors name the address as every later one will: without a scheme.
	_, addr, ok := strings.Cut(cfg.Address, "://")
	if !ok {
		addr = cfg.Address
	}
	if err := checkFiles(cfg); err != nil {
		return nil, fmt.Errorf("consul %s: %w", addr, err)
	}
	if cfg.HttpClient == nil && cfg.Transport != nil {
		// HTTP/1.1 only. Consul's client gets HTTP/2 by accident (the
		// pooled transport it takes from go-cleanhttp forces it), and Go's
		// HTTP/2 client reports a TLS session the server ends right after
		// the handshake (Consul refusing our client certificate) as just
		// "http2: client conn could not be established", losing the why.
		var p http.Protocols
		p.SetHTTP1(true)
		cfg.Transport.Protocols = &p
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul %s: %w", addr, err)
	}
	// NewClient has filled in defaults (HttpClient included) and stripped
	// any scheme from Address.
	s := &Store{kv: client.KV(), txn: client.Txn(), addr: cfg.Address, http: cfg.HttpClient, access: accessOf(cfg), WaitTime: DefaultWaitTime}
	s.epoch, s.endEpoch = context.WithCancel(context.Background())
	return s, nil
}

// The renewal loop resets a Store's connections when this host's address
// changed.
var _ kv.ConnectionResetter = (*Store)(nil)

// ErrReset is the error of a request ResetConnections aborted.
var ErrReset = errors.New("request aborted: connections to Consul were reset (this host's address changed)")

// ResetConnections aborts every request in flight, Wait's blocking query
// included, and drops pooled connections. Called when this host's address
// changed: a connection made from the old address is dead, and a request on
// it would hang until RequestTimeout, a blocking query for its whole
// WaitTime. Callers see ErrReset and retry on fresh connections.
func (s *Store) ResetConnections() {
	s.mu.Lock()
	s.endEpoch()
	s.epoch, s.endEpoch = context.WithCancel(context.Background())
	s.mu.Unlock()
	if s.http != nil {
		s.http.CloseIdleConnections()
	}
}

// scoped returns ctx, ended also by the next ResetConnections (with cause
// ErrReset).
func (s *Store) scoped(ctx context.Context) (context.Context, context.CancelFunc) {
	s.mu.Lock()
	epoch := s.epoch
	s.mu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(epoch, func() { cancel(ErrReset) })
	return ctx, func() { stop(); cancel(context.Canceled) }
}

// Addr is the Consul address the store talks to, as used in its errors.
func (s *Store) Addr() string { return s.addr }

// Close does nothing: the HTTP client needs no teardown.
func (s *Store) Close() error { return nil }

// fail wraps err with the address and what was asked. When ctx has ended,
// its cause (ErrReset, a deadline) is named rather than whatever the HTTP
// client made of it.
func (s *Store) fail(ctx context.Context, err error, format string, args ...any) error {
	err = s.access.explain(err)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		err = fmt.Errorf("%w (%v)", cause, err)
	}
	return fmt.Errorf("consul %s: %s: %w", s.addr, fmt.Sprintf(format, args...), err)
}

// RequestTimeout bounds every call but Wait's blocking query: a request on a
// dead connection (this host's address changed, or Consul vanished without a
// reset) must fail and be retried, not hang a Docker call or a renewal.
const RequestTimeout = 30 * time.Second

// bounded returns ctx scoped to the current epoch, with RequestTimeout
// unless ctx has a deadline already.
func (s *Store) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := s.scoped(ctx)
	if _, ok := ctx.Deadline(); ok {
		return ctx, cancel
	}
	ctx, cancelTimeout := context.WithTimeout(ctx, RequestTimeout)
	return ctx, func() { cancelTimeout(); cancel() }
}

func queryOpts(ctx context.Context) *api.QueryOptions {
	return (&api.QueryOptions{}).WithContext(ctx)
}

func writeOpts(ctx context.Context) *api.WriteOptions {
	return (&api.WriteOptions{}).WithContext(ctx)
}

// Get returns the pair at key, or kv.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (kv.Pair, error) {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	p, _, err := s.kv.Get(key, queryOpts(ctx))
	if err != nil {
		return kv.Pair{}, s.fail(ctx, err, "get %s", key)
	}
	if p == nil {
		return kv.Pair{}, s.fail(ctx, kv.ErrNotFound, "get %s", key)
	}
	return pair(p), nil
}

// List returns the pairs under prefix, sorted by key, and Consul's index.
func (s *Store) List(ctx context.Context, prefix string) ([]kv.Pair, uint64, error) {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	ps, meta, err := s.kv.List(prefix, queryOpts(ctx))
	if err != nil {
		return nil, 0, s.fail(ctx, err, "list %s", prefix)
	}
	pairs, idx := result(ps, meta)
	return pairs, idx, nil
}

// Put writes value at key unconditionally.
func (s *Store) Put(ctx context.Context, key string, value []byte) error {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	if _, err := s.kv.Put(&api.KVPair{Key: key, Value: value}, writeOpts(ctx)); err != nil {
		return s.fail(ctx, err, "put %s", key)
	}
	return nil
}

// CAS writes value at key only if its ModifyIndex is index; index 0 creates
// only if the key is absent. Consul's ?cas= has exactly these semantics.
func (s *Store) CAS(ctx context.Context, key string, value []byte, index uint64) error {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	ok, _, err := s.kv.CAS(&api.KVPair{Key: key, Value: value, ModifyIndex: index}, writeOpts(ctx))
	if err != nil {
		return s.fail(ctx, err, "cas %s at index %d", key, index)
	}
	if !ok {
		return s.fail(ctx, kv.ErrConflict, "cas %s at index %d", key, index)
	}
	return nil
}

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	if _, err := s.kv.Delete(key, writeOpts(ctx)); err != nil {
		return s.fail(ctx, err, "delete %s", key)
	}
	return nil
}

// DeleteCAS removes key only if its ModifyIndex is still index.
//
// Consul's own DELETE ?cas= reports success for a key that does not exist,
// which would let two hosts both believe they removed the same lease. So
// the delete runs in a transaction behind a check-index op, which fails
// (rolling the transaction back) when the key is missing or has moved on.
func (s *Store) DeleteCAS(ctx context.Context, key string, index uint64) error {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	ops := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVCheckIndex, Key: key, Index: index}},
		{KV: &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: key, Index: index}},
	}
	if _, err := s.runTxn(ctx, ops); err != nil {
		return s.fail(ctx, err, "delete-cas %s at index %d", key, index)
	}
	return nil
}

// Txn runs ops as one Consul transaction. Each op becomes one of Consul's:
// OpCAS "cas", OpPut "set", OpCheck "check-index" (or "check-not-exists"
// at index 0), OpDelete "delete", and OpDeleteCAS a "check-index" then a
// "delete-cas", for the reason DeleteCAS gives. kv.MaxTxnOps keeps that
// within Consul's 64.
func (s *Store) Txn(ctx context.Context, ops []kv.Op) (uint64, error) {
	if len(ops) > kv.MaxTxnOps {
		return 0, fmt.Errorf("consul %s: txn: %d ops, at most %d", s.addr, len(ops), kv.MaxTxnOps)
	}
	if len(ops) == 0 {
		return 0, nil
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	var tops api.TxnOps
	writes := map[string]bool{}
	for i, op := range ops {
		if op.Key == "" {
			return 0, fmt.Errorf("consul %s: txn: op %d: empty key", s.addr, i)
		}
		switch op.Verb {
		case kv.OpPut:
			tops = append(tops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: op.Key, Value: op.Value}})
			writes[op.Key] = true
		case kv.OpCAS:
			tops = append(tops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: op.Key, Value: op.Value, Index: op.Index}})
			writes[op.Key] = true
		case kv.OpDeleteCAS:
			tops = append(tops,
				&api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckIndex, Key: op.Key, Index: op.Index}},
				&api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: op.Key, Index: op.Index}})
		case kv.OpCheck:
			verb := api.KVCheckIndex
			if op.Index == 0 {
				verb = api.KVCheckNotExists
			}
			tops = append(tops, &api.TxnOp{KV: &api.KVTxnOp{Verb: verb, Key: op.Key, Index: op.Index}})
		case kv.OpDelete:
			// Consul's "delete" of a missing key succeeds, as DELETE does.
			tops = append(tops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: op.Key}})
		default:
			return 0, fmt.Errorf("consul %s: txn: op %d: unknown verb %d", s.addr, i, op.Verb)
		}
	}
	resp, err := s.runTxn(ctx, tops)
	if err != nil {
		return 0, s.fail(ctx, err, "txn of %d ops on %s", len(ops), ops[0].Key)
	}
	// Results hold an entry (its value blanked) for each write and check
	// that found a key, not one per op; the writes' entries carry the
	// transaction's index.
	var idx uint64
	for _, r := range resp.Results {
		if r != nil && r.KV != nil && writes[r.KV.Key] {
			idx = max(idx, r.KV.ModifyIndex)
		}
	}
	return idx, nil
}

// runTxn runs ops; a rollback is kv.ErrConflict only if every failure
// Consul reports is a condition that did not hold (a key missing, present
// or moved on); anything else (a denied ACL, say) is a real error.
func (s *Store) runTxn(ctx context.Context, ops api.TxnOps) (*api.TxnResponse, error) {
	ok, resp, _, err := s.txn.Txn(ops, queryOpts(ctx))
	if err != nil {
		return nil, err
	}
	if ok {
		return resp, nil
	}
	var msgs []string
	conflict := resp != nil && len(resp.Errors) > 0
	if resp != nil {
		for _, e := range resp.Errors {
			msgs = append(msgs, e.What)
			if !conflictMsg(e.What) {
				conflict = false
			}
		}
	}
	if conflict {
		return nil, fmt.Errorf("%w (%s)", kv.ErrConflict, strings.Join(msgs, "; "))
	}
	return nil, fmt.Errorf("transaction failed: %s", strings.Join(msgs, "; "))
}

// conflictMsg recognises Consul's failure messages for check-index
// ("key ... doesn't exist", "current modify index N != M"), delete-cas and
// cas ("index is stale"), and check-not-exists ("key ... exists").
func conflictMsg(what string) bool {
	for _, m := range []string{"doesn't exist", "modify index", "index is stale", "\" exists"} {
		if strings.Contains(what, m) {
			return true
		}
	}
	return false
}

// Wait blocks until Consul's index for prefix differs from index, or ctx ends,
// then answers as List. Index 0 does not block.
//
// An index lower than the caller's means Consul lost or restored its data
// (or is another cluster); following Consul's advice the caller must then
// start over, which it does by taking the fresh answer and its index. A
// blocking query would sit out its whole WaitTime in that case, since it waits
// for the index to pass WaitIndex, so a cheap non-blocking read goes first:
// the prefix's keys, folded at the first '.' after the prefix (keysSep),
// which answer the prefix's own index (Consul takes it over every key, the
// folded ones too) in a few hundred bytes for felt's keys, which are
// dotted addresses. An index that differs answers at once with a listing.
//
// The prefix's own index, not the KV table's: a read of the prefix as one
// missing key answers the table's, which after a data loss may be above the
// caller's again (other prefixes written since) while the prefix's is still
// below it, its records not the caller's; the blocking query then slept
// its whole WaitTime. (Listing the whole prefix first, as Wait once did,
// cost the caller every change's answer twice.)
func (s *Store) Wait(ctx context.Context, prefix string, index uint64) ([]kv.Pair, uint64, error) {
	ctx, cancel := s.scoped(ctx)
	defer cancel()
	q := queryOpts(ctx) // non-blocking
	if index != 0 {
		_, meta, err := s.kv.Keys(prefix, keysSep, q)
		if err != nil {
			return nil, 0, s.fail(ctx, err, "wait %s after index %d", prefix, index)
		}
		if max(meta.LastIndex, 1) == index {
			q = (&api.QueryOptions{WaitIndex: index, WaitTime: s.WaitTime}).WithContext(ctx)
		}
	}
	for {
		ps, meta, err := s.kv.List(prefix, q)
		if err != nil {
			return nil, 0, s.fail(ctx, err, "wait %s after index %d", prefix, index)
		}
		pairs, idx := result(ps, meta)
		if index == 0 || idx != index {
			return pairs, idx, nil
		}
		// Unchanged: block until it changes or WaitTime passes, then look
		// again.
		q = (&api.QueryOptions{WaitIndex: index, WaitTime: s.WaitTime}).WithContext(ctx)
	}
}

// keysSep folds Wait's read of a prefix's keys: felt's keys are dotted
// addresses, so a few hundred bytes hold them. Any separator gives the same
// index; one that folds nothing costs only bytes.
const keysSep = "."

func result(ps api.KVPairs, meta *api.QueryMeta) ([]kv.Pair, uint64) {
	pairs := make([]kv.Pair, 0, len(ps))
	for _, p := range ps {
		pairs = append(pairs, pair(p))
	}
	// Consul returns keys in order already; make the contract not depend
	// on that.
	slices.SortFunc(pairs, func(a, b kv.Pair) int { return strings.Compare(a.Key, b.Key) })
	// Consul's blocking-query guidance: treat an index of 0 as 1, so it
	// can never turn a blocking Wait into a non-blocking one.
	return pairs, max(meta.LastIndex, 1)
}

func pair(p *api.KVPair) kv.Pair {
	return kv.Pair{Key: p.Key, Value: p.Value, ModifyIndex: p.ModifyIndex}
}
