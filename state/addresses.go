package state

import (
	"context"
	"net/netip"
	"strings"

	"github.com/felt-net/felt/internal/ipnet"
)

// Address kinds, recorded with each allocation so a reader of the state (and
// felt's inspection commands) can tell a gateway from a container.
const (
	KindGateway   = "gateway"
	KindAux       = "aux"
	KindContainer = "container"
)

// Address is one allocated address of a host subnet, written and read by
// the IPAM. PoolID is the pool request that allocated it: several pool
// requests can share a host subnet (the same --subnet with different
// --ip-range), and releasing one must free only its own addresses. Records
// written before PoolID existed have none; they go only with the last pool
// request of their subnet.
type Address struct {
	Addr   netip.Addr `json:"addr"`
	Kind   string     `json:"kind"`
	PoolID string     `json:"poolID,omitempty"`
}

// addresses of subnet are keyed by the address.
func (s *Store) addresses(subnet netip.Prefix) table[Address] {
	return table[Address]{s, root + "addrs/" + ipnet.Key(subnet) + "/"}
}

// cursors are keyed by subnet.
func (s *Store) cursors() table[netip.Addr] { return table[netip.Addr]{s, root + "cursor/"} }

// Address reads the record of addr in subnet; it reports false if absent.
func (s *Store) Address(ctx context.Context, subnet netip.Prefix, addr netip.Addr) (Address, bool, error) {
	return s.addresses(subnet).get(ctx, addr.String())
}

// Addresses lists the address records of subnet, in key order.
func (s *Store) Addresses(ctx context.Context, subnet netip.Prefix) ([]Address, error) {
	return s.addresses(subnet).all(ctx)
}

// UsedAddrs lists the allocated addresses of subnet from the keys alone: an
// address whose record does not decode is still taken.
func (s *Store) UsedAddrs(ctx context.Context, subnet netip.Prefix) ([]netip.Addr, error) {
	t := s.addresses(subnet)
	keys, err := s.keys(ctx, t.prefix)
	if err != nil {
		return nil, err
	}
	used := make([]netip.Addr, 0, len(keys))
	for _, k := range keys {
		if addr, err := netip.ParseAddr(strings.TrimPrefix(k, t.prefix)); err == nil {
			used = append(used, addr)
		}
	}
	return used, nil
}

// CreateAddress records a in subnet unless its address is recorded
// already; it reports false if it was.
func (s *Store) CreateAddress(ctx context.Context, subnet netip.Prefix, a Address) (bool, error) {
	return s.addresses(subnet).create(ctx, a.Addr.String(), a)
}

// DeleteAddress removes the record of addr in subnet; absent is fine.
func (s *Store) DeleteAddress(ctx context.Context, subnet netip.Prefix, addr netip.Addr) error {
	return s.addresses(subnet).delete(ctx, addr.String())
}

// DeleteAddresses removes every address record of subnet, then its cursor.
func (s *Store) DeleteAddresses(ctx context.Context, subnet netip.Prefix) error {
	keys, err := s.keys(ctx, s.addresses(subnet).prefix)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := s.delete(ctx, k); err != nil {
			return err
		}
	}
	return s.cursors().delete(ctx, ipnet.Key(subnet))
}

// Cursor is the address of subnet handed out last (invalid if none), where
// the search for the next free one starts.
func (s *Store) Cursor(ctx context.Context, subnet netip.Prefix) (netip.Addr, error) {
	last, _, err := s.cursors().get(ctx, ipnet.Key(subnet))
	return last, err
}

// PutCursor records addr as the address of subnet handed out last.
func (s *Store) PutCursor(ctx context.Context, subnet netip.Prefix, addr netip.Addr) error {
	return s.cursors().put(ctx, ipnet.Key(subnet), addr)
}
