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

// networks are keyed by Docker's network ID.
func (s *Store) networks() table[Network] { return table[Network]{s, root + "networks/"} }

// Network reads the record of network id; it reports false if absent.
func (s *Store) Network(ctx context.Context, id string) (Network, bool, error) {
	return s.networks().get(ctx, id)
}

// Networks lists every network record, in ID order.
func (s *Store) Networks(ctx context.Context) ([]Network, error) { return s.networks().all(ctx) }

// NetworkOfPool finds the network of this host that uses pool; it reports
// false if none does. There is one at most: CreateNetwork refuses a second
// Docker network of a pool on a host.
func (s *Store) NetworkOfPool(ctx context.Context, pool netip.Prefix) (Network, bool, error) {
	return s.networks().find(ctx, func(n Network) bool { return n.Pool == pool })
}

// PutNetwork writes n's record.
func (s *Store) PutNetwork(ctx context.Context, n Network) error {
	return s.networks().put(ctx, n.ID, n)
}

// DeleteNetwork removes the record of network id; absent is fine.
func (s *Store) DeleteNetwork(ctx context.Context, id string) error {
	return s.networks().delete(ctx, id)
}
