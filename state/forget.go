package state

import "context"

// Earlier felts of this host to forget: the host IDs of leases this host
// took over (see ipam/forget.go), recorded until what they left in the
// kernel is removed, so a failure is retried after a restart too.

// earlierHosts are keyed by host ID, and hold it.
func (s *Store) earlierHosts() table[string] { return table[string]{s, root + "forget/"} }

// EarlierHosts lists the recorded host IDs, in key order.
func (s *Store) EarlierHosts(ctx context.Context) ([]string, error) {
	return s.earlierHosts().all(ctx)
}

// PutEarlierHost records hostID.
func (s *Store) PutEarlierHost(ctx context.Context, hostID string) error {
	return s.earlierHosts().put(ctx, hostID, hostID)
}

// DeleteEarlierHost removes the record of hostID; absent is fine.
func (s *Store) DeleteEarlierHost(ctx context.Context, hostID string) error {
	return s.earlierHosts().delete(ctx, hostID)
}
