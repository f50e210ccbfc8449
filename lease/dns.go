package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
)

// Container names across hosts (issue 11). Each host publishes, per pool it
// has containers on, one record of its containers' names:
//
//	<prefix>dns/<pool>/<hostID>   {"pool","hostID","entries":[{"ip","names"}]}
//
// One key per host per network, rewritten whole at every change: a write
// is never partial, and a dead or departed host leaves one key to delete.
// The host alone writes its key, so a plain Put does. The record lives as
// long as the host's lease in the pool: readers trust it only while that
// lease is live, and only for addresses inside the lease's subnet (so a
// host cannot claim another's addresses); Release and RemoveExpired delete
// it. ("names/" already holds cluster network name claims, hence "dns/".)

// NameEntry is one container address and the names it answers to.
type NameEntry struct {
	IP    netip.Addr `json:"ip"`
	Names []string   `json:"names"`
	// Name is the container's own name, what its address resolves back
	// to (PTR), as Docker answers for its local containers. Empty in
	// records of older felts: their addresses have no PTR answer.
	Name string `json:"name,omitempty"`
}

// NameRecord is one host's names in one pool.
type NameRecord struct {
	Pool    netip.Prefix `json:"pool"`
	HostID  string       `json:"hostID"`
	Entries []NameEntry  `json:"entries"`
}

func (r *Registry) dnsPrefix() string { return r.prefix + "dns/" }

func (r *Registry) dnsKey(pool netip.Prefix, hostID string) string {
	return r.dnsPrefix() + ipnet.Key(pool) + "/" + hostID
}

// PutNames makes entries hostID's names in pool: the record is written
// whole, sorted (so equal sets give equal bytes), and not at all if the
// stored one is the same; an empty set deletes it.
func (r *Registry) PutNames(ctx context.Context, pool netip.Prefix, hostID string, entries []NameEntry) error {
	if !pool.IsValid() || hostID == "" || strings.Contains(hostID, "/") {
		return fmt.Errorf("names of host %q in pool %s: invalid pool or host ID", hostID, pool)
	}
	key := r.dnsKey(pool, hostID)
	rec := NameRecord{Pool: pool, HostID: hostID, Entries: normalEntries(entries)}
	if len(rec.Entries) == 0 {
		return r.deleteNames(ctx, key)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	cur, err := r.store.Get(ctx, key)
	switch {
	case err == nil && bytes.Equal(cur.Value, b):
		return nil
	case err != nil && !errors.Is(err, kv.ErrNotFound):
		return fmt.Errorf("names of pool %s: %w", pool, err)
	}
	if err := r.store.Put(ctx, key, b); err != nil {
		return fmt.Errorf("names of pool %s: %w", pool, err)
	}
	return nil
}

// DeleteNames removes hostID's names in pool; absent is fine.
func (r *Registry) DeleteNames(ctx context.Context, pool netip.Prefix, hostID string) error {
	return r.deleteNames(ctx, r.dnsKey(pool, hostID))
}

func (r *Registry) deleteNames(ctx context.Context, key string) error {
	if err := r.store.Delete(ctx, key); err != nil && !errors.Is(err, kv.ErrNotFound) {
		return fmt.Errorf("deleting names %s: %w", key, err)
	}
	return nil
}

// ListNames returns every host's name records, with the store's index.
func (r *Registry) ListNames(ctx context.Context) ([]NameRecord, uint64, error) {
	pairs, idx, err := r.store.List(ctx, r.dnsPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("listing names: %w", err)
	}
	return r.decodeNames(pairs), idx, nil
}

// WatchNames is a blocking query on every host's name records, as
// WatchLeases is on the leases (an index going backwards comes back as 0).
func (r *Registry) WatchNames(ctx context.Context, after uint64) ([]NameRecord, uint64, error) {
	pairs, next, err := r.store.Wait(ctx, r.dnsPrefix(), after)
	if err != nil {
		return nil, 0, fmt.Errorf("watching names: %w", err)
	}
	if next < after {
		next = 0
	}
	return r.decodeNames(pairs), next, nil
}

// decodeNames skips records that do not parse or whose key does not match
// their content: one bad record must not hide the others.
func (r *Registry) decodeNames(pairs []kv.Pair) []NameRecord {
	out := make([]NameRecord, 0, len(pairs))
	for _, p := range pairs {
		var rec NameRecord
		if err := json.Unmarshal(p.Value, &rec); err != nil || !rec.Pool.IsValid() || rec.HostID == "" {
			continue
		}
		if p.Key != r.dnsKey(rec.Pool, rec.HostID) {
			continue
		}
		out = append(out, rec)
	}
	return out
}

// normalEntries drops invalid addresses and empty names, lowercases,
// sorts and deduplicates: the record is deterministic. Of several entries
// for one address, the least non-empty Name is kept.
func normalEntries(in []NameEntry) []NameEntry {
	byIP := map[netip.Addr]*NameEntry{}
	for _, e := range in {
		if !e.IP.Is4() {
			continue
		}
		cur := byIP[e.IP]
		if cur == nil {
			cur = &NameEntry{IP: e.IP}
			byIP[e.IP] = cur
		}
		for _, n := range e.Names {
			if n = strings.TrimSuffix(strings.ToLower(n), "."); n != "" {
				cur.Names = append(cur.Names, n)
			}
		}
		if n := strings.TrimSuffix(strings.ToLower(e.Name), "."); n != "" && (cur.Name == "" || n < cur.Name) {
			cur.Name = n
		}
	}
	out := make([]NameEntry, 0, len(byIP))
	for _, e := range byIP {
		if len(e.Names) == 0 && e.Name == "" {
			continue
		}
		slices.Sort(e.Names)
		e.Names = slices.Compact(e.Names)
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b NameEntry) int { return a.IP.Compare(b.IP) })
	return out
}
