package state

import (
	"context"
	"net/netip"
)

// Network is this host's record of one felt network, written by the network
// driver at CreateNetwork and read by both drivers: the IPAM serves only
// pools that have one (NetworkOfPool).
type Network struct {
	ID            string       `json:"id"`
	Pool          netip.Prefix `json:"pool"`
	Subnet        netip.Prefix `json:"subnet"`
	Gateway       netip.Addr   `json:"gateway"`
	Bridge        string       `json:"bridge"`
	Backend       string       `json:"backend"`
	VNI           int          `json:"vni,omitempty"`
	MTU           int          `json:"mtu"`
	DirectRouting bool         `json:"directRouting,omitempty"`
	Port          int          `json:"port,omitempty"`
	Internal      bool         `json:"internal,omitempty"`
}

const networksPrefix = root + "networks/"

func networkKey(id string) string { return networksPrefix + id }

// Network reads the record of network id; it reports false if absent.
func (s *Store) Network(ctx context.Context, id string) (Network, bool, error) {
	var n Network
	ok, err := s.get(ctx, networkKey(id), &n)
	return n, ok, err
}

// Networks lists every network record, in ID order.
func (s *Store) Networks(ctx context.Context) ([]Network, error) {
	return list[Network](ctx, s, networksPrefix)
}

// NetworkOfPool reports whether a network of this host uses pool, and
// which (one Docker network per pool and host: CreateNetwork refuses a
// second).
func (s *Store) NetworkOfPool(ctx context.Context, pool netip.Prefix) (Network, bool, error) {
	nets, err := s.Networks(ctx)
	if err != nil {
		return Network{}, false, err
	}
	for _, n := range nets {
		if n.Pool == pool {
			return n, true, nil
		}
	}
	return Network{}, false, nil
}

// PutNetwork writes n's record.
func (s *Store) PutNetwork(ctx context.Context, n Network) error {
	return s.put(ctx, networkKey(n.ID), n)
}

// DeleteNetwork removes the record of network id; absent is fine.
func (s *Store) DeleteNetwork(ctx context.Context, id string) error {
	return s.delete(ctx, networkKey(id))
}
