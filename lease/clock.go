package lease

import "time"

// Clock tells the time; tests pass a fake one to expire leases on demand.
type Clock interface{ Now() time.Time }

// SystemClock is the real time.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }
