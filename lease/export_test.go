package lease

import (
	"time"

	"github.com/felt-net/felt/kv"
)

// Test hooks into Watch: its plan's size, its retry pace, and how many
// records it decoded.

// Tune sets the watch's query budget and bucket target; call it before
// SetPools.
func (w *Watch) Tune(budget int, target uint64) { w.budget, w.target = budget, target }

// FastRetry makes the watch retry a failing store at once, nearly.
func (w *Watch) FastRetry() { w.retry, w.retryMax = 5*time.Millisecond, 20*time.Millisecond }

// Decodes is how many records the watch has decoded.
func (w *Watch) Decodes() int64 { return w.decodes.Load() }

// PlanBuckets is planBuckets.
var PlanBuckets = planBuckets

// NoCoalesce makes Next answer as soon as a change is read.
func (w *Watch) NoCoalesce() { w.coalesce = 0 }

// StoreOf is the store under r.
func StoreOf(r *Registry) kv.Store { return r.store }
