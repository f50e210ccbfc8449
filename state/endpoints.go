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
	// SandboxKey is the container's network namespace as Docker names it
	// in Join: the same for every endpoint of one container (names' scope).
	SandboxKey string `json:"sandboxKey,omitempty"`
	// DNSRoute says Join gave this endpoint the route to felt's DNS
	// address: one endpoint per sandbox has it (a second fails the start).
	DNSRoute bool `json:"dnsRoute,omitempty"`
}

// endpoints are keyed by Docker's endpoint ID.
func (s *Store) endpoints() table[Endpoint] { return table[Endpoint]{s, root + "endpoints/"} }

// Endpoint reads the record of endpoint id; it reports false if absent.
func (s *Store) Endpoint(ctx context.Context, id string) (Endpoint, bool, error) {
	return s.endpoints().get(ctx, id)
}

// Endpoints lists every endpoint record, in ID order.
func (s *Store) Endpoints(ctx context.Context) ([]Endpoint, error) { return s.endpoints().all(ctx) }

// PutEndpoint writes ep's record.
func (s *Store) PutEndpoint(ctx context.Context, ep Endpoint) error {
	return s.endpoints().put(ctx, ep.ID, ep)
}

// DeleteEndpoint removes the record of endpoint id; absent is fine.
func (s *Store) DeleteEndpoint(ctx context.Context, id string) error {
	return s.endpoints().delete(ctx, id)
}
