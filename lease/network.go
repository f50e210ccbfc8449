package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
)

// Defaults applied when the first host creates a network record. The
// default backend and port come from Spec.Backends: lease knows no backend.
const (
	DefaultSubnetLen = 24
	// firstVNI is where automatic VNI allocation starts; 1 is flannel's
	// default, and starting there keeps tcpdump output familiar.
	firstVNI = 1
	maxVNI   = 1<<24 - 1
)

// Network is the record all hosts of one overlay share, keyed by its pool.
// Each field has one writer. Pool and SubnetLen are the IPAM's: its
// RequestPool (and each lease renewal) records them through ReservePool
// before it takes a lease. The rest is the network driver's: CreateNetwork
// (and Reassert) settles them through SettleNetwork. Zero values of Backend,
// VNI and Port mean "not settled yet": the network is reserved but no host
// has created it. A lease is written only against a version of the record
// not marked for deletion (recordFence), which Acquire makes again by the
// same two calls if it went.
type Network struct {
	Pool          netip.Prefix `json:"pool"`                    // ReservePool
	SubnetLen     int          `json:"subnetLen"`               // ReservePool
	Backend       string       `json:"backend,omitempty"`       // SettleNetwork
	VNI           int          `json:"vni,omitempty"`           // SettleNetwork
	MTU           int          `json:"mtu,omitempty"`           // SettleNetwork; 0: each host derives it from its underlay
	DirectRouting bool         `json:"directRouting,omitempty"` // SettleNetwork
	Port          int          `json:"port,omitempty"`          // SettleNetwork; for backends that take one
	// Cluster is the network's cluster declaration (Declare, Withdraw in
	// cluster.go), nil if none. Optional, so older felts read the record
	// as before; their rewrites drop it, and the sync loop declares again.
	// A pointer keeps Network comparable (writeNetwork's next == cur):
	// merge copies it, so an unchanged record compares equal.
	Cluster *Declaration `json:"cluster,omitempty"`

	index uint64
	// deleting is the record's "deleting" mark: a host is removing the
	// record (deleteNetwork), and no lease may be written on the strength
	// of this version of it (see recordFence). Kept out of the struct's
	// JSON: deleteNetwork sets it, and an Acquire clears it, on the raw
	// record (setDeleting); every other write of the record (through
	// Network) drops it, which is what a write that uses the record must
	// do. Older felts ignore it.
	deleting bool
}

// Spec is what one host asks for. Zero fields are "not given": the recorded
// value, or the default, is taken. A given field that differs from the
// recorded one is a conflict, reported with both values.
type Spec struct {
	Pool          netip.Prefix
	SubnetLen     int
	Backend       string
	VNI           int
	MTU           int
	DirectRouting *bool
	Port          int
	// Backends says what the backends need of the record; nil (a caller
	// that only re-records known values) means no default backend, no VNI
	// allocated and no port defaulted.
	Backends Backends
}

// Backends is what the network record needs to know of the overlay
// backends; the overlay's backend registry implements it.
type Backends interface {
	Default() string                // the backend of a network created without one
	NeedsVNI(backend string) bool   // a VNI is allocated for the backend's networks
	DefaultPort(backend string) int // the port of its networks when none is given; 0: it takes none
}

func (r *Registry) networkKey(pool netip.Prefix) string {
	return r.prefix + "networks/" + ipnet.Key(pool)
}

func (r *Registry) vniKey(vni int) string { return r.prefix + "vnis/" + strconv.Itoa(vni) }

// GetNetwork returns the record for pool, or kv.ErrNotFound.
func (r *Registry) GetNetwork(ctx context.Context, pool netip.Prefix) (Network, error) {
	p, err := r.store.Get(ctx, r.networkKey(pool))
	if err != nil {
		return Network{}, err
	}
	return decodeNetwork(p)
}

// ListNetworks returns every recorded network.
func (r *Registry) ListNetworks(ctx context.Context) ([]Network, error) {
	pairs, _, err := r.store.List(ctx, r.prefix+"networks/")
	if err != nil {
		return nil, err
	}
	out := make([]Network, 0, len(pairs))
	for _, p := range pairs {
		n, err := decodeNetwork(p)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func decodeNetwork(p kv.Pair) (Network, error) {
	var w struct {
		Network
		Deleting bool `json:"deleting"`
	}
	if err := json.Unmarshal(p.Value, &w); err != nil {
		return Network{}, fmt.Errorf("network record %s: %w", p.Key, err)
	}
	n := w.Network
	n.index = p.ModifyIndex
	n.deleting = w.Deleting
	return n, nil
}

// setDeleting returns the record v with its "deleting" mark set (on) or
// removed, every other key kept as it is, those this felt does not know
// included. The bytes always differ from v's when the mark changes, so the
// write gets a new index on Consul too.
func setDeleting(v []byte, on bool) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, err
	}
	if on {
		m["deleting"] = json.RawMessage("true")
	} else {
		delete(m, "deleting")
	}
	return json.Marshal(m)
}

// ReservePool records pool and the length of its host subnets (0: the
// recorded one, or the default) before this host leases a subnet: it
// creates the record, refusing a pool that overlaps another network's, or
// checks subnetLen against the existing one. It settles nothing else; the
// returned record is what Acquire needs.
func (r *Registry) ReservePool(ctx context.Context, pool netip.Prefix, subnetLen int) (Network, error) {
	return r.writeNetwork(ctx, Spec{Pool: pool, SubnetLen: subnetLen}, false)
}

// SettleNetwork creates the record for spec.Pool, or checks spec against
// the existing one, and settles every option the network driver decides:
// on return backend, VNI (claimed, for a backend that needs one:
// spec.Backends) and port are chosen.
func (r *Registry) SettleNetwork(ctx context.Context, spec Spec) (Network, error) {
	return r.writeNetwork(ctx, spec, true)
}

// writeNetwork is ReservePool (complete false: only the pool and subnet
// length are merged) and SettleNetwork (complete true).
func (r *Registry) writeNetwork(ctx context.Context, spec Spec, complete bool) (Network, error) {
	for attempt := 0; attempt < 20; attempt++ {
		cur, err := r.GetNetwork(ctx, spec.Pool)
		exists := err == nil
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return Network{}, fmt.Errorf("network %s: %w", spec.Pool, err)
		}
		if !exists {
			if err := r.checkOverlap(ctx, spec.Pool); err != nil {
				return Network{}, err
			}
			cur = Network{Pool: spec.Pool}
		}
		next, err := merge(cur, spec, complete)
		if err != nil {
			return Network{}, err
		}
		if exists && next == cur {
			return cur, nil
		}
		claimed := false
		if complete && needsVNIClaim(spec.Backends, cur, next) {
			if err := r.claimVNI(ctx, &next); err != nil {
				return Network{}, err
			}
			claimed = true
		}
		val, _ := json.Marshal(next)
		err = r.store.CAS(ctx, r.networkKey(spec.Pool), val, cur.index)
		if errors.Is(err, kv.ErrConflict) {
			if claimed {
				// Another host changed the record first. Give the VNI back
				// unless the record now holds that very VNI (the claim key
				// names the pool, so both hosts saw it as theirs).
				if now, gerr := r.GetNetwork(ctx, spec.Pool); gerr == nil && now.VNI != next.VNI {
					_ = r.store.Delete(ctx, r.vniKey(next.VNI))
				}
			}
			continue
		}
		if err != nil {
			if claimed {
				// The record was not written: the claim must not outlive it.
				_ = r.store.Delete(ctx, r.vniKey(next.VNI))
			}
			return Network{}, fmt.Errorf("network %s: %w", spec.Pool, err)
		}
		made, err := r.GetNetwork(ctx, spec.Pool)
		if err == nil && !exists {
			err = r.undoIfOverlapping(ctx, made)
		}
		return made, err
	}
	return Network{}, fmt.Errorf("network %s: too many concurrent updates, try again", spec.Pool)
}

// undoIfOverlapping looks for overlapping pools again once the record of
// n.Pool is made: the check before it and the write are separate steps, so
// two hosts creating overlapping pools at once both passed the check. Any
// overlap found now makes this creation back off (record and VNI claim
// removed, unless another host has used the record meanwhile). Safe: of two
// records made at once, the one written last sees the other. Both may back
// off; the users try again.
func (r *Registry) undoIfOverlapping(ctx context.Context, n Network) error {
	overlap := r.checkOverlap(ctx, n.Pool)
	if overlap == nil {
		return nil
	}
	// The record and its claim go in one transaction, as in deleteNetwork:
	// deleted apart, a host making the record again between the two would
	// lose its claim on Consul (its same-bytes rewrite keeps the index).
	ops := []kv.Op{{Verb: kv.OpDeleteCAS, Key: r.networkKey(n.Pool), Index: n.index}}
	if n.VNI != 0 {
		if claim, err := r.store.Get(ctx, r.vniKey(n.VNI)); err == nil && string(claim.Value) == ipnet.Key(n.Pool) {
			ops = append(ops, kv.Op{Verb: kv.OpDeleteCAS, Key: claim.Key, Index: claim.ModifyIndex})
		}
	}
	if _, err := r.store.Txn(ctx, ops); err != nil {
		return errors.Join(overlap, fmt.Errorf("network %s: not removed again: %w", n.Pool, err))
	}
	return overlap
}

// merge applies spec to the recorded network, naming the recorded value on a
// conflict so the user knows what the other hosts use.
func merge(cur Network, spec Spec, complete bool) (Network, error) {
	next := cur
	conflict := func(opt string, recorded, asked any) error {
		return fmt.Errorf("network %s is recorded with %s=%v; this host asked for %s=%v (omit the option to use the recorded value, or remove the network on every host first)",
			cur.Pool, opt, recorded, opt, asked)
	}
	if err := settle(&next.SubnetLen, cur.SubnetLen, spec.SubnetLen, "subnet_len", conflict); err != nil {
		return Network{}, err
	}
	if next.SubnetLen == 0 {
		next.SubnetLen = DefaultSubnetLen
		if spec.Pool.Bits() > DefaultSubnetLen {
			next.SubnetLen = spec.Pool.Bits()
		}
	}
	if err := settle(&next.Backend, cur.Backend, spec.Backend, "backend", conflict); err != nil {
		return Network{}, err
	}
	switch {
	case spec.MTU == 0:
	case cur.MTU == 0 && cur.Backend == "":
		next.MTU = spec.MTU
	case cur.MTU != spec.MTU:
		return Network{}, conflict("com.docker.network.driver.mtu", mtuString(cur.MTU), spec.MTU)
	}
	if spec.DirectRouting != nil {
		switch {
		case cur.Backend == "":
			next.DirectRouting = *spec.DirectRouting
		case cur.DirectRouting != *spec.DirectRouting:
			return Network{}, conflict("directrouting", cur.DirectRouting, *spec.DirectRouting)
		}
	}
	if !complete {
		return next, nil
	}
	if next.Backend == "" && spec.Backends != nil {
		next.Backend = spec.Backends.Default()
	}
	if err := settle(&next.VNI, cur.VNI, spec.VNI, "vni", conflict); err != nil {
		return Network{}, err
	}
	if err := settle(&next.Port, cur.Port, spec.Port, "port", conflict); err != nil {
		return Network{}, err
	}
	if next.Port == 0 && spec.Backends != nil {
		next.Port = spec.Backends.DefaultPort(next.Backend)
	}
	return next, nil
}

// settle merges one option the usual way: one not asked (zero) keeps the
// recorded value, one not recorded yet takes the asked value, and a recorded
// value other than the asked one is a conflict. (MTU and directrouting have
// rules of their own, in merge.)
func settle[T comparable](next *T, recorded, asked T, opt string, conflict func(opt string, recorded, asked any) error) error {
	var zero T
	switch {
	case asked == zero:
	case recorded == zero:
		*next = asked
	case recorded != asked:
		return conflict(opt, recorded, asked)
	}
	return nil
}

// needsVNIClaim says whether SettleNetwork must claim a VNI for next: for a
// backend that needs one (b), none yet or one given that is not the
// recorded one yet. A VNI given to a network whose backend takes none (-o
// vni without -o backend, on a host-gw record) is recorded but claims
// nothing, as before backends had a registry. Without b (a record made
// again after a lease: keepNetwork), a recorded VNI is claimed again.
func needsVNIClaim(b Backends, cur, next Network) bool {
	if b == nil {
		return next.VNI != 0 && next.VNI != cur.VNI
	}
	return b.NeedsVNI(next.Backend) && (next.VNI == 0 || next.VNI != cur.VNI)
}

func mtuString(mtu int) string {
	if mtu == 0 {
		return "unset (derived on each host)"
	}
	return strconv.Itoa(mtu)
}

// checkOverlap refuses a pool that shares addresses with another network's.
func (r *Registry) checkOverlap(ctx context.Context, pool netip.Prefix) error {
	nets, err := r.ListNetworks(ctx)
	if err != nil {
		return fmt.Errorf("network %s: %w", pool, err)
	}
	for _, n := range nets {
		if n.Pool != pool && n.Pool.Overlaps(pool) {
			return fmt.Errorf("pool %s overlaps the pool %s of another felt network: choose a --subnet that does not overlap", pool, n.Pool)
		}
	}
	return nil
}

// claimVNI gives next a VNI no other network holds: the asked one, or the
// lowest free one. The claim is a create-if-absent key, so two pools racing
// for the same number cannot both get it.
func (r *Registry) claimVNI(ctx context.Context, next *Network) error {
	owner := []byte(ipnet.Key(next.Pool))
	try := func(vni int) error {
		var err error
		for range 10 {
			err = r.store.CAS(ctx, r.vniKey(vni), owner, 0)
			if !errors.Is(err, kv.ErrConflict) {
				return err
			}
			p, gerr := r.store.Get(ctx, r.vniKey(vni))
			if errors.Is(gerr, kv.ErrNotFound) {
				continue // removed meanwhile (its pool's last lease went): free again
			}
			if gerr != nil || string(p.Value) != string(owner) {
				return err
			}
			// Ours already (an earlier attempt, or the record's before a
			// deleteNetwork): rewritten, so that a deleteNetwork that read
			// the claim before leaves it.
			if err = r.store.CAS(ctx, p.Key, owner, p.ModifyIndex); !errors.Is(err, kv.ErrConflict) {
				return err
			}
		}
		return err
	}
	if next.VNI != 0 {
		if next.VNI < 1 || next.VNI > maxVNI {
			return fmt.Errorf("option vni=%d: must be between 1 and %d", next.VNI, maxVNI)
		}
		if err := try(next.VNI); err != nil {
			if errors.Is(err, kv.ErrConflict) {
				p, _ := r.store.Get(ctx, r.vniKey(next.VNI))
				if string(p.Value) == string(owner) || p.Value == nil {
					return fmt.Errorf("vni %d: its claim kept changing (hosts creating and removing this network at once), try again", next.VNI)
				}
				return fmt.Errorf("option vni=%d: already used by the felt network with pool %s", next.VNI, keyToPool(string(p.Value)))
			}
			return fmt.Errorf("vni %d: %w", next.VNI, err)
		}
		return nil
	}
	pairs, _, err := r.store.List(ctx, r.prefix+"vnis/")
	if err != nil {
		return fmt.Errorf("vnis: %w", err)
	}
	// A claim already naming this pool is taken first (try rewrites it):
	// an earlier attempt's whose record write failed (the record was
	// removed meanwhile), or one left by a crash. Passed over, it would
	// stay claimed for good, by a pool that does not use it.
	used := map[int]bool{}
	var ours []int
	for _, p := range pairs {
		n, _ := strconv.Atoi(strings.TrimPrefix(p.Key, r.prefix+"vnis/"))
		used[n] = true
		if string(p.Value) == string(owner) && n >= firstVNI && n <= maxVNI {
			ours = append(ours, n)
		}
	}
	for _, vni := range ours {
		if try(vni) == nil {
			*next = withVNI(*next, vni)
			return nil
		}
	}
	for vni := firstVNI; vni <= maxVNI; vni++ {
		if used[vni] {
			continue
		}
		err := try(vni)
		if err == nil {
			*next = withVNI(*next, vni)
			return nil
		}
		if !errors.Is(err, kv.ErrConflict) {
			return fmt.Errorf("vni %d: %w", vni, err)
		}
	}
	return errors.New("no free VNI left")
}

func withVNI(n Network, vni int) Network { n.VNI = vni; return n }

func keyToPool(k string) string {
	if p, err := ipnet.ParseKey(k); err == nil {
		return p.String()
	}
	return k
}

// deleteNetwork removes the record of pool and its VNI claim if no lease of
// pool is left, so the next creation starts afresh. A record with a live
// cluster declaration stays: it is what makes the network exist on every
// host, whether or not one holds a lease now; it goes only after Withdraw.
// A tombstoned one goes, as any other, with the last lease.
//
// Another host may be taking a lease meanwhile, on the strength of the
// record as it is. Lease writes do not write the record (a per-pool key
// every host watches): each checks, in its own transaction, that the
// record is still at a version not marked "deleting" (recordFence). So the
// record is first marked (a compare-and-set at the index read), the leases
// listed after the mark, and the record deleted at the marked index only:
//
//   - a lease written before the mark is seen in the listing: the record
//     stays (the mark is taken off again);
//   - a lease write after the mark fails its check (the record is at the
//     marked index, or gone); that host reads the record again and takes
//     the mark off (a compare-and-set at the marked index, so our delete
//     then fails and the record stays) or, if the delete came first, makes
//     the record again (and rewrites its VNI claim, so our delete of the
//     claim fails too), and writes its lease against the new version;
//   - a record found marked already (a host removing it now, or one that
//     stopped half-way) is not marked again: no lease can have been
//     written against a marked version, so one written against an earlier
//     version was written before this read, and the listing sees it.
//
// Older felts write their lease first and then rewrite the record
// (their keepNetwork's touch, which keeps the mark): our delete at the
// marked index fails, or they find the record gone and make it again, as
// with older deleters. (An older felt's deleteNetwork against this felt's
// Acquire is not fenced: it deletes at the index it read before its
// listing, which a lease write here does not change.)
//
// The pool is listed once before anything is written: a pool that still
// has leases (every release but the last) costs a listing, no write, and
// wakes nobody's watch.
func (r *Registry) deleteNetwork(ctx context.Context, pool netip.Prefix) error {
	rest, err := r.Leases(ctx, pool)
	if err != nil || len(rest) > 0 {
		return err
	}
	key := r.networkKey(pool)
	p, err := r.store.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	n, err := decodeNetwork(p)
	if err != nil {
		return err
	}
	if n.Cluster.Live() {
		// Kept. A declaration made after this read changes the record,
		// so the DeleteCAS below fails on it.
		return nil
	}
	marked := p.Value
	if !n.deleting {
		if marked, err = setDeleting(p.Value, true); err != nil {
			return fmt.Errorf("network record %s: %w", key, err)
		}
		idx, err := r.store.Txn(ctx, []kv.Op{{Verb: kv.OpCAS, Key: key, Value: marked, Index: n.index}})
		if errors.Is(err, kv.ErrConflict) {
			return nil // someone is using it again
		}
		if err != nil {
			return err
		}
		n.index = idx
	}
	if rest, err = r.Leases(ctx, pool); err != nil {
		return err
	}
	if len(rest) > 0 {
		// A lease written before the mark: the record stays, unmarked
		// (else the next Acquire takes the mark off). A conflict: someone
		// else wrote it since, which serves as well.
		if v, err := setDeleting(marked, false); err == nil {
			_ = r.store.CAS(ctx, key, v, n.index)
		}
		return nil
	}
	var claim kv.Pair
	if n.VNI != 0 {
		if claim, err = r.store.Get(ctx, r.vniKey(n.VNI)); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
	}
	// The record and its claim go in one transaction: deleted apart, a
	// host finding the record gone between the two makes it again and
	// "rewrites" the claim with the same bytes, which Consul skips (the
	// index stays), so the claim's delete then succeeded and the VNI
	// was free for another pool while this one used it.
	ops := []kv.Op{{Verb: kv.OpDeleteCAS, Key: key, Index: n.index}}
	if claim.Key != "" && string(claim.Value) == ipnet.Key(pool) {
		ops = append(ops, kv.Op{Verb: kv.OpDeleteCAS, Key: claim.Key, Index: claim.ModifyIndex})
	}
	if _, err := r.store.Txn(ctx, ops); err != nil {
		if errors.Is(err, kv.ErrConflict) {
			return nil // someone is using it again
		}
		return err
	}
	return nil
}

// touch rewrites p, a JSON value, so that its ModifyIndex changes: a fence
// that makes a CAS or DeleteCAS by anyone who read p before fail. The bytes
// must differ: Consul skips a write of the value a key already holds (its
// ModifyIndex stays, and a CAS at the old index still succeeds). A
// trailing newline is added or removed, which every JSON decoder ignores,
// older felts' included; the meaning is unchanged.
func (r *Registry) touch(ctx context.Context, p kv.Pair) error {
	v := bytes.Clone(p.Value)
	if n := len(v); n > 0 && v[n-1] == '\n' {
		v = v[:n-1]
	} else {
		v = append(v, '\n')
	}
	return r.store.CAS(ctx, p.Key, v, p.ModifyIndex)
}

// recordFence is how a lease write stands against deleteNetwork: the
// index of a version of the pool's record not marked "deleting", which
// every lease write of one Acquire checks in its own transaction
// (writeLease). The record itself is not written: it is a per-pool key
// every host watches (the cluster loop), and a write per join woke them
// all. See deleteNetwork for the interleavings.
type recordFence struct {
	n     Network // the caller's record: made again from it if gone
	index uint64  // 0: not known yet
}

// newFence is the fence of an Acquire for n: n's own index, if n is an
// unmarked version read from the store (ipam reads the record just before
// it asks: no request), else read (readFence) when first needed.
func newFence(n Network) *recordFence {
	f := &recordFence{n: n}
	if !n.deleting {
		f.index = n.index
	}
	return f
}

// readFence reads the record and sets f.index to an unmarked version of it:
// the one read, or the mark taken off (a compare-and-set at the marked
// index, which makes the deleting host's delete fail), or the record made
// again from f.n if it went (the pool's last lease was released). It is
// what keepNetwork was, without a write when nothing is amiss.
func (r *Registry) readFence(ctx context.Context, f *recordFence) error {
	n := f.n
	key := r.networkKey(n.Pool)
	for range 10 {
		p, err := r.store.Get(ctx, key)
		if errors.Is(err, kv.ErrNotFound) {
			made, err := r.remakeNetwork(ctx, n)
			if err != nil {
				return err
			}
			if !made.deleting && made.index != 0 {
				f.index = made.index
				return nil
			}
			continue // marked again already: look again
		}
		if err != nil {
			return fmt.Errorf("network %s: %w", n.Pool, err)
		}
		cur, err := decodeNetwork(p)
		if err != nil {
			return err
		}
		if n.VNI != 0 && cur.VNI != n.VNI {
			return fmt.Errorf("network %s: its record was made again with vni=%d meanwhile (this host had %d): try again", n.Pool, cur.VNI, n.VNI)
		}
		if !cur.deleting {
			f.index = cur.index
			return nil
		}
		v, err := setDeleting(p.Value, false)
		if err != nil {
			return fmt.Errorf("network record %s: %w", key, err)
		}
		idx, err := r.store.Txn(ctx, []kv.Op{{Verb: kv.OpCAS, Key: key, Value: v, Index: cur.index}})
		if errors.Is(err, kv.ErrConflict) {
			continue // deleted, or written, meanwhile
		}
		if err != nil {
			return fmt.Errorf("network %s: %w", n.Pool, err)
		}
		f.index = idx
		return nil
	}
	return fmt.Errorf("network %s: its record kept changing (hosts removing it while this one leases), try again", n.Pool)
}

// remakeNetwork makes the record of n.Pool again from n, after it went: by
// the calls that made it (ReservePool, and SettleNetwork if n was settled).
// Without it a host could hold a lease of a pool without a record, and the
// next host to create the network would get another VNI.
func (r *Registry) remakeNetwork(ctx context.Context, n Network) (Network, error) {
	var made Network
	var err error
	if n.Backend == "" {
		made, err = r.ReservePool(ctx, n.Pool, n.SubnetLen)
	} else {
		spec := Spec{Pool: n.Pool, SubnetLen: n.SubnetLen, Backend: n.Backend, VNI: n.VNI, MTU: n.MTU, Port: n.Port, DirectRouting: &n.DirectRouting}
		made, err = r.SettleNetwork(ctx, spec)
	}
	if err != nil {
		return Network{}, fmt.Errorf("network %s: its record was removed meanwhile and cannot be made again: %w", n.Pool, err)
	}
	return made, nil
}

// writeLease runs ops, a lease write (create, renewal, takeover), with the
// check of f's record version first (f nil: none). A failed check is told
// from a failed lease condition by reading the record: if it moved, the
// fence is read again (readFence) and ops tried again; else the conflict
// is the lease's, for the caller.
func (r *Registry) writeLease(ctx context.Context, f *recordFence, ops []kv.Op) (uint64, error) {
	if f == nil {
		return r.store.Txn(ctx, ops)
	}
	key := r.networkKey(f.n.Pool)
	for range 5 {
		if f.index == 0 {
			if err := r.readFence(ctx, f); err != nil {
				return 0, err
			}
		}
		idx, err := r.store.Txn(ctx, append([]kv.Op{{Verb: kv.OpCheck, Key: key, Index: f.index}}, ops...))
		if !errors.Is(err, kv.ErrConflict) {
			return idx, err
		}
		p, gerr := r.store.Get(ctx, key)
		if gerr == nil && p.ModifyIndex == f.index {
			return 0, err // the lease's condition
		}
		if gerr != nil && !errors.Is(gerr, kv.ErrNotFound) {
			return 0, fmt.Errorf("network %s: %w", f.n.Pool, gerr)
		}
		f.index = 0
	}
	return 0, fmt.Errorf("network %s: its record kept changing (hosts removing it while this one leases), try again", f.n.Pool)
}

// DeleteAll removes every key under the registry's prefix and says how
// many (for tests that simulate a store that lost its data, and for
// decommissioning).
func (r *Registry) DeleteAll(ctx context.Context) (int, error) {
	pairs, _, err := r.store.List(ctx, r.prefix)
	if err != nil {
		return 0, err
	}
	for i, p := range pairs {
		if err := r.store.Delete(ctx, p.Key); err != nil {
			return i, err
		}
	}
	return len(pairs), nil
}
