package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
)

const hostIDKey = root + "host-id"

// HostID returns this host's stable identity, creating it on first use. It
// names the host's leases, so a host whose IP changes keeps its subnets.
func (s *Store) HostID(ctx context.Context) (string, error) {
	var id string
	if ok, err := s.get(ctx, hostIDKey, &id); err != nil || ok {
		return id, err
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	if _, err := s.create(ctx, hostIDKey, hex.EncodeToString(b)); err != nil {
		return "", err
	}
	_, err := s.get(ctx, hostIDKey, &id)
	return id, err
}
