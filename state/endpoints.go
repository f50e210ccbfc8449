package state

import (
	"context"
	"net/netip"
)

// Endpoint is this host's record of one endpoint (a container's veth pair),
// written and read by the network driver.
type Endpoint struct {
	ID        string       `json:"id"`
	NetworkID string       `json:"networkID"`
	Address   netip.Prefix `json:"address"`
	MAC       string       `json:"mac"`
	HostVeth  string       `json:"hostVeth"`
	PeerVeth  string       `json:"peerVeth"`
}

const endpointsPrefix = root + "endpoints/"

func endpointKey(id string) string { return endpointsPrefix + id }

// Endpoint reads the record of endpoint id; it reports false if absent.
func (s *Store) Endpoint(ctx context.Context, id string) (Endpoint, bool, error) {
	var ep Endpoint
	ok, err := s.get(ctx, endpointKey(id), &ep)
	return ep, ok, err
}

// Endpoints lists every endpoint record, in ID order.
func (s *Store) Endpoints(ctx context.Context) ([]Endpoint, error) {
	return list[Endpoint](ctx, s, endpointsPrefix)
}

// PutEndpoint writes ep's record.
func (s *Store) PutEndpoint(ctx context.Context, ep Endpoint) error {
	return s.put(ctx, endpointKey(ep.ID), ep)
}

// DeleteEndpoint removes the record of endpoint id; absent is fine.
func (s *Store) DeleteEndpoint(ctx context.Context, id string) error {
	return s.delete(ctx, endpointKey(id))
}
