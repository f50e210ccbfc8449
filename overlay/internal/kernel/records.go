package kernel

import "sync"

// Records keeps, per network ID, what a backend's last successful full
// Sync left in the kernel, for its SyncPeers (incremental sync): a delta
// is applied to the record instead of a dump of the kernel's tables. Take
// removes the record while a SyncPeers works on it and Remember puts it
// back once it succeeded, so after one that failed (or a Sync that did not
// finish) there is none, and the next SyncPeers asks for a full Sync. The
// zero value is ready to use.
type Records[T any] struct {
	mu sync.Mutex
	m  map[string]*T
}

// Remember records r as network id's.
func (rs *Records[T]) Remember(id string, r *T) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.m == nil {
		rs.m = map[string]*T{}
	}
	rs.m[id] = r
}

// Forget drops network id's record.
func (rs *Records[T]) Forget(id string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	delete(rs.m, id)
}

// Take removes network id's record and returns it, or nil.
func (rs *Records[T]) Take(id string) *T {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.m[id]
	delete(rs.m, id)
	return r
}
