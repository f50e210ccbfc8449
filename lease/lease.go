// Package lease keeps the records hosts share about an overlay: one network
// record per pool (the options every host must agree on) and one lease per
// host subnet. All writes are single compare-and-set operations on a kv.Store,
// so hosts racing for the same subnet or the same VNI never both win.
//
// The Registry (registry.go) owns the layout of the store's keys; nothing
// outside this package names one. One file per operation: acquire.go, renew.go,
// release.go, expire.go (RemoveExpired), list.go, watch.go (WatchLeases, one
// blocking query over every pool's leases), network.go (the network record:
// ReservePool for the IPAM, SettleNetwork for the network driver), cluster.go
// (cluster declarations in the network record: Declare, Withdraw, Epoch;
// WatchNetworks is in watch.go), dns.go (each host's container names per
// pool, for names across hosts: PutNames, ListNames, WatchNames). A lease
// carries the backends' data opaquely (BackendData), flattened into its JSON
// record as felt always wrote it (record.go).
package lease

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/felt-net/felt/kv"
)

// Lease says one host owns one subnet of a pool until Expiry.
type Lease struct {
	Pool     netip.Prefix `json:"pool"`
	Subnet   netip.Prefix `json:"subnet"`
	HostID   string       `json:"hostID"`
	PublicIP netip.Addr   `json:"publicIP"`
	// BackendData is what the owner's backends publish for their peers (a
	// JSON object, opaque to lease; vxlan's VTEP MAC, say). Its keys are
	// flattened into the record (record.go), where they have always been.
	BackendData json.RawMessage `json:"-"`
	// Expiry zero means a permanent reservation, as in flannel.
	Expiry time.Time `json:"expiry,omitzero"`

	index uint64
}

// Owner is what a host puts in its leases.
type Owner struct {
	HostID   string
	PublicIP netip.Addr
	// BackendData goes into the owner's leases as Lease.BackendData.
	BackendData json.RawMessage
}

// Expired reports whether the lease is past its expiry at now.
func (l Lease) Expired(now time.Time) bool { return !l.Expiry.IsZero() && now.After(l.Expiry) }

// decodeLeases turns the pairs of a List or Wait on leasesPrefix into
// leases. Records that do not parse, or that sit at a key other than their
// lease's own (atOwnKey), are skipped: one bad key must not stop a host from
// programming all the others.
func (r *Registry) decodeLeases(pairs []kv.Pair) []Lease {
	out := make([]Lease, 0, len(pairs))
	for _, p := range pairs {
		var l Lease
		if err := json.Unmarshal(p.Value, &l); err != nil || !r.atOwnKey(p.Key, l) {
			continue
		}
		l.index = p.ModifyIndex
		out = append(out, l)
	}
	return out
}

// get reads the lease of subnet in pool.
func (r *Registry) get(ctx context.Context, pool, subnet netip.Prefix) (Lease, error) {
	p, err := r.store.Get(ctx, r.leaseKey(pool, subnet))
	if err != nil {
		return Lease{}, fmt.Errorf("lease %s: %w", subnet, err)
	}
	ls := r.decodeLeases([]kv.Pair{p})
	if len(ls) != 1 {
		return Lease{}, fmt.Errorf("lease %s: unreadable record", subnet)
	}
	return ls[0], nil
}
