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

const (
	addrsPrefix  = root + "addrs/"
	cursorPrefix = root + "cursor/"
)

func subnetAddrsPrefix(subnet netip.Prefix) string { return addrsPrefix + ipnet.Key(subnet) + "/" }

func addrKey(subnet netip.Prefix, a netip.Addr) string { return subnetAddrsPrefix(subnet) + a.String() }

func cursorKey(subnet netip.Prefix) string { return cursorPrefix + ipnet.Key(subnet) }

// Address reads the record of addr in subnet; it reports false if absent.
func (s *Store) Address(ctx context.Context, subnet netip.Prefix, addr netip.Addr) (Address, bool, error) {
	var a Address
	ok, err := s.get(ctx, addrKey(subnet, addr), &a)
	return a, ok, err
}

// Addresses lists the address records of subnet, in key order.
func (s *Store) Addresses(ctx context.Context, subnet netip.Prefix) ([]Address, error) {
	return list[Address](ctx, s, subnetAddrsPrefix(subnet))
}

// UsedAddrs lists the allocated addresses of subnet from the keys alone: an
// address whose record does not decode is still taken.
func (s *Store) UsedAddrs(ctx context.Context, subnet netip.Prefix) ([]netip.Addr, error) {
	keys, err := s.keys(ctx, subnetAddrsPrefix(subnet))
	if err != nil {
		return nil, err
	}
	used := make([]netip.Addr, 0, len(keys))
	for _, k := range keys {
		if addr, err := netip.ParseAddr(strings.TrimPrefix(k, subnetAddrsPrefix(subnet))); err == nil {
			used = append(used, addr)
		}
	}
	return used, nil
}

// CreateAddress records a in subnet unless its address is recorded
// already; it reports false if it was.
func (s *Store) CreateAddress(ctx context.Context, subnet netip.Prefix, a Address) (bool, error) {
	return s.create(ctx, addrKey(subnet, a.Addr), a)
}

// DeleteAddress removes the record of addr in subnet; absent is fine.
func (s *Store) DeleteAddress(ctx context.Context, subnet netip.Prefix, addr netip.Addr) error {
	return s.delete(ctx, addrKey(subnet, addr))
}

// DeleteAddresses removes every address record of subnet, then its cursor.
func (s *Store) DeleteAddresses(ctx context.Context, subnet netip.Prefix) error {
	keys, err := s.keys(ctx, subnetAddrsPrefix(subnet))
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := s.delete(ctx, k); err != nil {
			return err
		}
	}
	return s.delete(ctx, cursorKey(subnet))
}

// Cursor is the address of subnet handed out last (invalid if none), where
// the search for the next free one starts.
func (s *Store) Cursor(ctx context.Context, subnet netip.Prefix) (netip.Addr, error) {
	var last netip.Addr
	_, err := s.get(ctx, cursorKey(subnet), &last)
	return last, err
}

// PutCursor records addr as the address of subnet handed out last.
func (s *Store) PutCursor(ctx context.Context, subnet netip.Prefix, addr netip.Addr) error {
	return s.put(ctx, cursorKey(subnet), addr)
}
