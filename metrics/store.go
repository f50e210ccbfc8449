package metrics

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/felt-net/felt/kv"
)

// Store wraps the shared store so that every request is counted and timed
// (felt_store_*). The wrapper adds nothing else: errors and answers pass
// through unchanged.
func (m *Metrics) Store(s kv.Store) kv.Store {
	return &store{Store: s, m: m, failing: map[string]bool{}}
}

type store struct {
	kv.Store
	m *Metrics

	mu sync.Mutex
	// failing: the last Wait on each prefix failed, so the next that works
	// is a reconnect. felt watches a fixed handful of prefixes.
	failing map[string]bool
}

// observe counts one request of op that took since start and ended in err.
func (s *store) observe(op string, start time.Time, err error) {
	outcome := OutcomeOK
	switch {
	case err == nil:
	case errors.Is(err, kv.ErrNotFound):
		outcome = OutcomeNotFound
	case errors.Is(err, kv.ErrConflict):
		outcome = OutcomeConflict
	default:
		outcome = OutcomeError
	}
	s.m.storeRequests.WithLabelValues(op, outcome).Inc()
	s.m.storeDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (s *store) Get(ctx context.Context, key string) (kv.Pair, error) {
	start := time.Now()
	p, err := s.Store.Get(ctx, key)
	s.observe("get", start, err)
	return p, err
}

func (s *store) List(ctx context.Context, prefix string) ([]kv.Pair, uint64, error) {
	start := time.Now()
	ps, idx, err := s.Store.List(ctx, prefix)
	s.observe("list", start, err)
	return ps, idx, err
}

func (s *store) Put(ctx context.Context, key string, value []byte) error {
	start := time.Now()
	err := s.Store.Put(ctx, key, value)
	s.observe("put", start, err)
	return err
}

func (s *store) CAS(ctx context.Context, key string, value []byte, index uint64) error {
	start := time.Now()
	err := s.Store.CAS(ctx, key, value, index)
	s.observe("cas", start, err)
	return err
}

func (s *store) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := s.Store.Delete(ctx, key)
	s.observe("delete", start, err)
	return err
}

func (s *store) DeleteCAS(ctx context.Context, key string, index uint64) error {
	start := time.Now()
	err := s.Store.DeleteCAS(ctx, key, index)
	s.observe("delete_cas", start, err)
	return err
}

func (s *store) Txn(ctx context.Context, ops []kv.Op) (uint64, error) {
	start := time.Now()
	idx, err := s.Store.Txn(ctx, ops)
	s.observe("txn", start, err)
	return idx, err
}

// Wait is counted but not timed: a blocking query lasts until a change or
// its wait time, minutes, which says nothing about the store's latency.
// A Wait ended by its caller (shutdown) is neither an error nor a request.
func (s *store) Wait(ctx context.Context, prefix string, index uint64) ([]kv.Pair, uint64, error) {
	ps, idx, err := s.Store.Wait(ctx, prefix, index)
	if err != nil && ctx.Err() != nil {
		return ps, idx, err
	}
	s.mu.Lock()
	wasFailing := s.failing[prefix]
	s.failing[prefix] = err != nil
	s.mu.Unlock()
	outcome := OutcomeOK
	if err != nil {
		outcome = OutcomeError
		s.m.storeWatchErrors.Inc()
	} else if wasFailing {
		s.m.storeWatchReconnect.Inc()
	}
	s.m.storeRequests.WithLabelValues("wait", outcome).Inc()
	return ps, idx, err
}

// ResetConnections passes through to a store that holds connections.
func (s *store) ResetConnections() {
	if r, ok := s.Store.(kv.ConnectionResetter); ok {
		r.ResetConnections()
	}
}
