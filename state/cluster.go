package state

import (
	"context"
	"net/netip"
)

// ClusterMember ties one of this host's Docker networks to the cluster
// declaration it belongs to (package cluster). Written by the cluster sync
// loop: before it declares a local network (Confirmed false: the
// declaration may not be written yet) and after it created or adopted one
// (Confirmed true). Its UID names the declaration, so that a later
// declaration on the same pool (a new network of the same pool) is told
// apart from this one.
type ClusterMember struct {
	ID        string       `json:"id"` // Docker's network ID
	UID       string       `json:"uid"`
	Pool      netip.Prefix `json:"pool"`
	Epoch     string       `json:"epoch"` // the shared store's epoch it was written in
	Confirmed bool         `json:"confirmed,omitempty"`
	// Withdrawn: its declaration was withdrawn or replaced, and the
	// network is kept only while containers use it. Recorded here because
	// the tombstone in the shared store may go (a wiped store): such a
	// network is never declared again, only removed.
	Withdrawn bool `json:"withdrawn,omitempty"`
}

// ClusterIntent records that the user removed Docker network ID on this
// host, written by the network driver's DeleteNetwork (a local write only,
// so that `docker network rm` works while Consul is down). The sync loop
// turns it into a withdrawn declaration (UID), or drops it (UID empty: the
// network was not, or not yet, a member).
type ClusterIntent struct {
	ID   string       `json:"id"`
	UID  string       `json:"uid,omitempty"`
	Pool netip.Prefix `json:"pool"`
}

// cluster records are keyed by Docker's network ID.
func (s *Store) clusterMembers() table[ClusterMember] {
	return table[ClusterMember]{s, root + "cluster/members/"}
}

func (s *Store) clusterIntents() table[ClusterIntent] {
	return table[ClusterIntent]{s, root + "cluster/intents/"}
}

// ClusterMember reads the membership of network id; false if absent.
func (s *Store) ClusterMember(ctx context.Context, id string) (ClusterMember, bool, error) {
	return s.clusterMembers().get(ctx, id)
}

// ClusterMembers lists every membership, in ID order.
func (s *Store) ClusterMembers(ctx context.Context) ([]ClusterMember, error) {
	return s.clusterMembers().all(ctx)
}

// PutClusterMember writes m.
func (s *Store) PutClusterMember(ctx context.Context, m ClusterMember) error {
	return s.clusterMembers().put(ctx, m.ID, m)
}

// DeleteClusterMember removes the membership of network id; absent is fine.
func (s *Store) DeleteClusterMember(ctx context.Context, id string) error {
	return s.clusterMembers().delete(ctx, id)
}

// ClusterIntent reads the removal intent of network id; false if absent.
func (s *Store) ClusterIntent(ctx context.Context, id string) (ClusterIntent, bool, error) {
	return s.clusterIntents().get(ctx, id)
}

// ClusterIntents lists every removal intent, in ID order.
func (s *Store) ClusterIntents(ctx context.Context) ([]ClusterIntent, error) {
	return s.clusterIntents().all(ctx)
}

// PutClusterIntent writes i.
func (s *Store) PutClusterIntent(ctx context.Context, i ClusterIntent) error {
	return s.clusterIntents().put(ctx, i.ID, i)
}

// DeleteClusterIntent removes the intent of network id; absent is fine.
func (s *Store) DeleteClusterIntent(ctx context.Context, id string) error {
	return s.clusterIntents().delete(ctx, id)
}
