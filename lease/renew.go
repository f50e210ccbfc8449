package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/felt-net/felt/kv"
)

// RenewRequest asks to extend Owner's lease of Subnet in Network.
type RenewRequest struct {
	Network Network
	Subnet  netip.Prefix
	Owner   Owner
	TTL     time.Duration // 0: permanent
	// OnTakeover is told about leases of earlier incarnations of this host
	// that the renewal took over or removed (see Acquire).
	OnTakeover func(old Lease, action string)
}

// Renew extends the lease req.Owner holds on req.Subnet, with a fresh
// expiry and the owner's current public IP and backend data.
//
// It is Acquire restricted to that one subnet (Prefer and Within), so it
// costs what Acquire costs for a host's own lease at Prefer (claimFast): a
// read and a transaction (which checks the network record's index, and
// writes nothing for a lease unchanged), whatever the size of the pool.
// And it repairs
// what happened meanwhile instead of failing on it: a lease that
// vanished (it expired and a peer removed it, or the store lost its data)
// is claimed again if the subnet is still free; a lease of an earlier
// incarnation of this host on it is taken over; the network record is made
// again if the pool's last release removed it. It fails if another host
// holds the subnet now: the caller's containers are on a subnet it no
// longer owns.
func (r *Registry) Renew(ctx context.Context, req RenewRequest) (Lease, error) {
	l, err := r.Acquire(ctx, AcquireRequest{Network: req.Network, Owner: req.Owner, TTL: req.TTL,
		Prefer: req.Subnet, Within: req.Subnet, OnTakeover: req.OnTakeover})
	if err != nil {
		return Lease{}, err
	}
	if l.Subnet != req.Subnet {
		// Cannot happen with Within set to the subnet; guard anyway, since
		// containers would be stranded on a subnet the host no longer owns.
		return Lease{}, fmt.Errorf("lease %s: renewed as %s", req.Subnet, l.Subnet)
	}
	return l, nil
}

// rewrite writes l again for req's owner with a fresh expiry and the
// owner's current public IP and backend data: this host's own lease renewed (a host
// whose address changed keeps its subnet), or an earlier incarnation's
// lease taken over (see Acquire). One transaction: a compare-and-set at l's
// index, and the owner's entries in the index (owners.go) pointed at it,
// which also gives a lease an older felt wrote its entries. The entries of
// l's former owner or address go after it, if they still name l.
func (r *Registry) rewrite(ctx context.Context, l Lease, req AcquireRequest, now time.Time) (Lease, error) {
	next := l
	next.PublicIP = req.Owner.PublicIP
	if !emptyData(req.Owner.BackendData) || next.HostID != req.Owner.HostID {
		next.BackendData = req.Owner.BackendData // a taken-over lease keeps nothing of the old host's
	}
	next.HostID = req.Owner.HostID
	if req.TTL > 0 {
		next.Expiry = now.Add(req.TTL)
	} else {
		next.Expiry = time.Time{}
	}
	val, err := json.Marshal(next)
	if err != nil {
		return Lease{}, fmt.Errorf("lease %s: renew: %w", l.Subnet, err)
	}
	// A lease unchanged (a permanent one renewed by its host, same
	// address and data) is checked at its index rather than written: its
	// index stays on every store (Consul skips a write of the same bytes,
	// the embedded store would not), so it is known without a read, and
	// nobody's lease watch wakes.
	key := r.leaseKey(l.Pool, l.Subnet)
	op := kv.Op{Verb: kv.OpCAS, Key: key, Value: val, Index: l.index}
	was, err := json.Marshal(l)
	same := err == nil && bytes.Equal(was, val)
	if same {
		op = kv.Op{Verb: kv.OpCheck, Key: key, Index: l.index}
	}
	idx, err := r.writeLease(ctx, req.fence, append([]kv.Op{op}, r.ownerPuts(next)...))
	if err != nil {
		return Lease{}, fmt.Errorf("lease %s: renew: %w", l.Subnet, err)
	}
	if same {
		idx = l.index
	}
	for _, k := range r.ownerKeys(l) {
		if !slices.Contains(r.ownerKeys(next), k) {
			r.dropEntryIf(ctx, k, func(e ownerEntry) bool { return e.HostID == l.HostID && e.Subnet == l.Subnet })
		}
	}
	// A changed lease was written, at the transaction's index.
	return r.decodeWritten(ctx, next, val, idx)
}
