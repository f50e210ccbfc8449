package lease

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
)

// The owner index lets Acquire find a host's lease, and an earlier
// incarnation's (same public IP), without listing the pool:
//
//	<prefix>lease-owners/<pool>/host/<hostID>   {"hostID","subnet"}
//	<prefix>lease-owners/<pool>/ip/<publicIP>   {"hostID","subnet"}
//
// Both are written in the same transaction as the lease they name (create,
// renewal, takeover), so a lease written by this felt always has them. They
// are hints, never the truth: an entry is believed only once the lease it
// names has been read and still has that owner. Older felts write leases
// without entries and remove leases without removing them, so an entry may
// dangle (its lease gone or someone else's), and a lease may have none;
// Acquire then does what it did before the index (it lists the pool) or,
// for a lease it cannot find (an older felt's, of this host's earlier
// incarnation), leases a second subnet beside it until the old one
// expires. The entries live outside leases/ so that nothing reading leases
// (the watch, Leases, AllLeases, older felts) ever sees them.

// ownerEntry is the value of both entries.
type ownerEntry struct {
	HostID string       `json:"hostID"`
	Subnet netip.Prefix `json:"subnet"`
}

func (r *Registry) ownersPrefix(pool netip.Prefix) string {
	return r.prefix + "lease-owners/" + ipnet.Key(pool) + "/"
}

func (r *Registry) hostOwnerKey(pool netip.Prefix, hostID string) string {
	return r.ownersPrefix(pool) + "host/" + hostID
}

func (r *Registry) ipOwnerKey(pool netip.Prefix, ip netip.Addr) string {
	return r.ownersPrefix(pool) + "ip/" + ip.String()
}

// ownerKeys are the keys of l's entries: by host ID, and by public IP if it
// has one.
func (r *Registry) ownerKeys(l Lease) []string {
	var keys []string
	if l.HostID != "" {
		keys = append(keys, r.hostOwnerKey(l.Pool, l.HostID))
	}
	if l.PublicIP.IsValid() {
		keys = append(keys, r.ipOwnerKey(l.Pool, l.PublicIP))
	}
	return keys
}

// ownerPuts are the ops that point l's entries at l, for the transaction
// that writes l.
func (r *Registry) ownerPuts(l Lease) []kv.Op {
	v, _ := json.Marshal(ownerEntry{HostID: l.HostID, Subnet: l.Subnet}) // cannot fail
	var ops []kv.Op
	for _, k := range r.ownerKeys(l) {
		ops = append(ops, kv.Op{Verb: kv.OpPut, Key: k, Value: v})
	}
	return ops
}

// ownerHint reads the entry at key: the subnet it names, and the entry
// itself (to remove it if it dangles). A missing or unreadable entry is no
// hint; a store error is an error.
func (r *Registry) ownerHint(ctx context.Context, key string) (ownerEntry, kv.Pair, error) {
	p, err := r.store.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return ownerEntry{}, kv.Pair{}, nil
	}
	if err != nil {
		return ownerEntry{}, kv.Pair{}, err
	}
	var e ownerEntry
	if json.Unmarshal(p.Value, &e) != nil || !e.Subnet.IsValid() {
		return ownerEntry{}, p, nil
	}
	return e, p, nil
}

// forgetOwner removes l's entries if they still name l (same host ID and
// subnet): after l was released or removed, so that entries of hosts that
// never come back do not pile up. Best effort: an entry left behind is
// only a dangling hint, dropped by the next Acquire that reads it.
func (r *Registry) forgetOwner(ctx context.Context, l Lease) {
	for _, k := range r.ownerKeys(l) {
		r.dropEntryIf(ctx, k, func(e ownerEntry) bool { return e.HostID == l.HostID && e.Subnet == l.Subnet })
	}
}

// dropEntryIf removes the entry at key if match accepts it (or it is
// unreadable), unless it changed meanwhile. Best effort, as forgetOwner.
func (r *Registry) dropEntryIf(ctx context.Context, key string, match func(ownerEntry) bool) {
	e, p, err := r.ownerHint(ctx, key)
	if err != nil || p.Key == "" {
		return
	}
	if !e.Subnet.IsValid() || match(e) {
		_ = r.store.DeleteCAS(ctx, key, p.ModifyIndex)
	}
}
