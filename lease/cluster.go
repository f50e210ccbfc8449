package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"

	"github.com/felt-net/felt/kv"
)

// Cluster declarations: a network created once, by any host, that every
// host's sync loop (package cluster) then creates in its own Docker engine.
// The declaration lives in the pool's network record (Network.Cluster), so
// declaring and withdrawing are each one compare-and-set on that record;
// a name claim (<prefix>names/<name>) makes the name unique across pools.

// Declaration is what a host declares for every host to create: the
// network as `docker network create` was given it. Its UID is new for every
// declaration, so a network removed and declared again under the same name
// is told apart from the one before.
type Declaration struct {
	UID        string            `json:"uid"` // random, new per declaration
	Name       string            `json:"name"`
	DriverOpts map[string]string `json:"driverOpts,omitempty"`
	IPAMOpts   map[string]string `json:"ipamOpts,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	IPRange    netip.Prefix      `json:"ipRange,omitzero"`
	Internal   bool              `json:"internal,omitempty"`
	Attachable bool              `json:"attachable,omitempty"`
	By         string            `json:"by"` // declaring host ID
	At         time.Time         `json:"at"`
	// Removed is the tombstone: the network was removed on host By. It
	// stays in the record while any host holds a lease of the pool, so a
	// host that was away sees the removal rather than a record gone.
	Removed *Removal `json:"removed,omitempty"`
}

// Removal says which host withdrew a declaration, and when (registry clock).
type Removal struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// Live reports whether d is a declaration that has not been withdrawn.
func (d *Declaration) Live() bool { return d != nil && d.Removed == nil }

var (
	// ErrNameTaken: the name is claimed by a live declaration on another
	// pool. The error text names that pool and its declaring host.
	ErrNameTaken = errors.New("network name already declared on another pool")
	// ErrDeclared: the record already carries another live declaration
	// (a different UID). The error text names it and its host.
	ErrDeclared = errors.New("pool already declared as another cluster network")
	// ErrWithdrawn: the record carries this very declaration (same UID),
	// withdrawn. A withdrawn UID is never made live again, so that a host
	// acting on an old view cannot bring back a network the user removed;
	// declare anew with a new UID.
	ErrWithdrawn = errors.New("declaration withdrawn")
	// ErrInvalidDeclaration: Declare refused the declaration itself (name,
	// UID, host or IP range); trying again cannot help.
	ErrInvalidDeclaration = errors.New("invalid cluster network declaration")
)

// nameClaim is the value of <prefix>names/<name>: the declaration that
// holds the name. It is valid only while the record of Pool carries UID,
// live (see claimName).
type nameClaim struct {
	Pool netip.Prefix `json:"pool"`
	UID  string       `json:"uid"`
}

// Limits of a declaration. A name becomes a key (<prefix>names/<name>), so
// it is held to Docker's own name characters: no '/', and no name made of
// dots only, can reach another key. 255 is far beyond what users type and
// well within Consul's key length limit.
const (
	maxNameLen = 255
	maxUIDLen  = 64
)

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func (r *Registry) nameKey(name string) string { return r.prefix + "names/" + name }

func (r *Registry) epochKey() string { return r.prefix + "cluster-epoch" }

// validate refuses a declaration that cannot be stored safely or means
// nothing on the other hosts; pool is the record's.
func (d *Declaration) validate(pool netip.Prefix) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrInvalidDeclaration)
	}
	switch {
	case len(d.Name) > maxNameLen:
		return bad("network name %.40q...: longer than %d characters", d.Name, maxNameLen)
	case !validName.MatchString(d.Name):
		return bad("network name %q: must start with a letter or digit, followed by letters, digits, '_', '.' or '-'", d.Name)
	case d.UID == "" || len(d.UID) > maxUIDLen:
		return bad("declaration of %q: UID must be 1 to %d hex digits, got %d characters", d.Name, maxUIDLen, len(d.UID))
	case !isHex(d.UID):
		return bad("declaration of %q: UID %q is not hex", d.Name, d.UID)
	case d.By == "":
		return bad("declaration of %q: no declaring host ID", d.Name)
	case d.IPRange.IsValid() && (d.IPRange.Bits() < pool.Bits() || !pool.Contains(d.IPRange.Addr())):
		return bad("declaration of %q: ip range %s is not inside the pool %s", d.Name, d.IPRange, pool)
	}
	return nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// Declare records d as the cluster network of pool, whose record must
// exist (the declaring host created the network, so it holds a lease; an
// error wrapping kv.ErrNotFound otherwise). It returns the record as
// written.
//
// A record already carrying d's UID, live, is returned unchanged: a
// declaration repeated after a crash is a no-op. Another live declaration
// is ErrDeclared; d's UID withdrawn is ErrWithdrawn; d.Name held by a live
// declaration on another pool is ErrNameTaken. A tombstone is replaced.
//
// The name is claimed first (claimName), then the record written by one
// CAS at the index read before the claim: a host taking the claim over in
// between rewrites this record first, so that CAS fails and the next
// attempt sees the claim gone. Hence of two hosts declaring one name on two
// pools at once, exactly one wins. A claim this call made is removed again
// if the declaration is not written after all.
func (r *Registry) Declare(ctx context.Context, pool netip.Prefix, d Declaration) (Network, error) {
	if err := d.validate(pool); err != nil {
		return Network{}, fmt.Errorf("declaring network on pool %s: %w", pool, err)
	}
	d.Removed = nil
	if d.At.IsZero() {
		d.At = r.clock.Now().UTC()
	}
	claimed := false
	fail := func(err error) (Network, error) {
		if claimed {
			if rerr := r.releaseName(ctx, d.Name, pool, d.UID); rerr != nil {
				err = errors.Join(err, fmt.Errorf("network name %q: claim not removed after the failure (it is stale, and taken over by the next declaration of the name): %w", d.Name, rerr))
			}
		}
		return Network{}, err
	}
	for range 20 {
		cur, err := r.GetNetwork(ctx, pool)
		if errors.Is(err, kv.ErrNotFound) {
			return fail(fmt.Errorf("declaring network %q: pool %s has no network record (no host has created the network, or its last lease went): %w", d.Name, pool, err))
		}
		if err != nil {
			return fail(fmt.Errorf("declaring network %q on pool %s: %w", d.Name, pool, err))
		}
		if c := cur.Cluster; c != nil && c.UID == d.UID {
			if c.Live() {
				return cur, nil
			}
			return fail(fmt.Errorf("declaring network %q on pool %s: declaration %s was withdrawn by host %s at %s: %w",
				d.Name, pool, d.UID, c.Removed.By, c.Removed.At.Format(time.RFC3339), ErrWithdrawn))
		}
		if c := cur.Cluster; c.Live() {
			return fail(fmt.Errorf("declaring network %q: pool %s is already declared as network %q by host %s (declaration %s): %w",
				d.Name, pool, c.Name, c.By, c.UID, ErrDeclared))
		}
		fresh, err := r.claimName(ctx, d.Name, pool, d.UID)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return fail(err)
		}
		// Only a claim this call made goes again on a failure: one that
		// named d already (a declaration made again after an older
		// felt's rewrite) is what tells it from a withdrawal (HoldsName).
		claimed = claimed || fresh
		next := cur
		decl := d
		next.Cluster = &decl
		val, err := json.Marshal(next)
		if err != nil {
			return fail(fmt.Errorf("declaring network %q on pool %s: %w", d.Name, pool, err))
		}
		err = r.store.CAS(ctx, r.networkKey(pool), val, cur.index)
		if errors.Is(err, kv.ErrConflict) {
			continue // the record changed (a settle, a deleting mark, a takeover's fence): look again
		}
		if err != nil {
			return fail(fmt.Errorf("declaring network %q on pool %s: %w", d.Name, pool, err))
		}
		made, err := r.GetNetwork(ctx, pool)
		if err != nil {
			return Network{}, fmt.Errorf("declaring network %q on pool %s: written, but not read back: %w", d.Name, pool, err)
		}
		return made, nil
	}
	return fail(fmt.Errorf("declaring network %q on pool %s: too many concurrent updates, try again", d.Name, pool))
}

// claimName makes <prefix>names/<name> name pool and uid. A claim naming
// them already is rewritten (touch), so that a releaseName or a takeover
// that read it before fails. Another claim holds the name only
// while the record of its pool carries its UID, live (ErrNameTaken);
// otherwise it is stale (a crash between claim and record, a record
// withdrawn, gone, or declared anew) and taken over.
//
// A takeover first rewrites the holder's record (touch: a fence): a host
// between its claim and its record write then fails that write, and looks
// again. Without the fence, a host that claimed the name but has not
// written its record yet would look stale, and both would win.
//
// kv.ErrConflict means the caller's record read may be outdated: it reads
// again and calls again. made says whether this call wrote the claim (not
// one naming pool and uid already).
func (r *Registry) claimName(ctx context.Context, name string, pool netip.Prefix, uid string) (made bool, err error) {
	key := r.nameKey(name)
	val, err := json.Marshal(nameClaim{Pool: pool, UID: uid})
	if err != nil {
		return false, fmt.Errorf("network name %q: %w", name, err)
	}
	wrap := func(err error) (bool, error) {
		if err == nil {
			return true, nil
		}
		if errors.Is(err, kv.ErrConflict) {
			return false, err
		}
		return false, fmt.Errorf("network name %q: claim: %w", name, err)
	}
	p, err := r.store.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return wrap(r.store.CAS(ctx, key, val, 0))
	}
	if err != nil {
		return wrap(err)
	}
	var c nameClaim
	if json.Unmarshal(p.Value, &c) != nil || !c.Pool.IsValid() {
		// Unreadable: nobody can hold a name by it.
		return wrap(r.store.CAS(ctx, key, val, p.ModifyIndex))
	}
	if c.Pool == pool && c.UID == uid {
		_, err := wrap(r.touch(ctx, p))
		return false, err
	}
	holder, err := r.store.Get(ctx, r.networkKey(c.Pool))
	switch {
	case errors.Is(err, kv.ErrNotFound):
		// No record to fence: a host between claim and record write read
		// its record before our claim read, so its write fails anyway.
	case err != nil:
		return wrap(fmt.Errorf("record of pool %s: %w", c.Pool, err))
	default:
		n, err := decodeNetwork(holder)
		if err != nil {
			return wrap(err)
		}
		if d := n.Cluster; d.Live() && d.UID == c.UID {
			return false, fmt.Errorf("network name %q: already declared on pool %s by host %s: %w", name, c.Pool, d.By, ErrNameTaken)
		}
		// On our own pool the caller's record CAS is the fence already.
		if c.Pool != pool {
			if err := r.touch(ctx, holder); err != nil {
				return wrap(err)
			}
		}
	}
	return wrap(r.store.CAS(ctx, key, val, p.ModifyIndex))
}

// HoldsName reports whether the name claim of name names pool and uid.
// The claim is written before a declaration and goes only with its
// withdrawal (or a takeover after it), while an older felt's rewrite of the
// record, which drops the declaration, leaves it: so in one epoch, a record
// without its declaration whose claim is gone was withdrawn, and made again
// since by a lease (a renewal, or a create racing the withdrawal).
func (r *Registry) HoldsName(ctx context.Context, name string, pool netip.Prefix, uid string) (bool, error) {
	p, err := r.store.Get(ctx, r.nameKey(name))
	if errors.Is(err, kv.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("network name %q: claim: %w", name, err)
	}
	var c nameClaim
	if json.Unmarshal(p.Value, &c) != nil {
		return false, nil
	}
	return c.Pool == pool && c.UID == uid, nil
}

// releaseName removes the claim of name if it names pool and uid and the
// record of pool does not carry uid live (then the claim is valid and
// stays: a declaration whose write reported an error yet was made). A claim
// changed meanwhile is left to whoever changed it.
func (r *Registry) releaseName(ctx context.Context, name string, pool netip.Prefix, uid string) error {
	p, err := r.store.Get(ctx, r.nameKey(name))
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var c nameClaim
	if json.Unmarshal(p.Value, &c) != nil || c.Pool != pool || c.UID != uid {
		return nil
	}
	n, err := r.GetNetwork(ctx, pool)
	switch {
	case err == nil && n.Cluster.Live() && n.Cluster.UID == uid:
		return nil
	case err != nil && !errors.Is(err, kv.ErrNotFound):
		return err
	}
	if err := r.store.DeleteCAS(ctx, p.Key, p.ModifyIndex); err != nil && !errors.Is(err, kv.ErrConflict) {
		return err
	}
	return nil
}

// Withdraw tombstones the declaration uid of pool: the network was removed
// on host byHost, and every host removes it. It is a no-op when the record
// is gone or carries no declaration uid. Then the name claim goes, and the
// record too (with its VNI claim) if no lease of pool is left; otherwise
// the tombstone stays until the last lease goes (deleteNetwork).
//
// Withdrawing a declaration already withdrawn does that cleanup again, so a
// Withdraw cut short (a crash, the store lost) completes when repeated.
func (r *Registry) Withdraw(ctx context.Context, pool netip.Prefix, uid, byHost string) error {
	if byHost == "" {
		return fmt.Errorf("withdrawing declaration %s of pool %s: no host ID given", uid, pool)
	}
	for range 20 {
		cur, err := r.GetNetwork(ctx, pool)
		if errors.Is(err, kv.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("withdrawing declaration %s of pool %s: %w", uid, pool, err)
		}
		c := cur.Cluster
		if c == nil || c.UID != uid {
			return nil
		}
		if c.Live() {
			next := cur
			decl := *c
			decl.Removed = &Removal{By: byHost, At: r.clock.Now().UTC()}
			next.Cluster = &decl
			val, err := json.Marshal(next)
			if err != nil {
				return fmt.Errorf("withdrawing declaration %s of pool %s: %w", uid, pool, err)
			}
			err = r.store.CAS(ctx, r.networkKey(pool), val, cur.index)
			if errors.Is(err, kv.ErrConflict) {
				continue
			}
			if err != nil {
				return fmt.Errorf("withdrawing network %q (pool %s): %w", c.Name, pool, err)
			}
		}
		if err := r.releaseName(ctx, c.Name, pool, uid); err != nil {
			return fmt.Errorf("withdrawing network %q (pool %s): name claim: %w", c.Name, pool, err)
		}
		if err := r.deleteNetwork(ctx, pool); err != nil {
			return fmt.Errorf("withdrawing network %q (pool %s): removing the record: %w", c.Name, pool, err)
		}
		return nil
	}
	return fmt.Errorf("withdrawing declaration %s of pool %s: too many concurrent updates, try again", uid, pool)
}

// Epoch returns the store's cluster epoch, <prefix>cluster-epoch: a random
// 128-bit hex ID made by the first host to ask. A host keeps the epoch its
// local cluster state was made in; a missing key, or another one, means
// the store was wiped (or replaced), and everything declared before must
// be declared again.
func (r *Registry) Epoch(ctx context.Context) (string, error) {
	key := r.epochKey()
	for range 5 {
		p, err := r.store.Get(ctx, key)
		if err == nil {
			if len(p.Value) == 0 {
				return "", fmt.Errorf("cluster epoch %s: empty value (delete the key and a new epoch is made)", key)
			}
			return string(p.Value), nil
		}
		if !errors.Is(err, kv.ErrNotFound) {
			return "", fmt.Errorf("cluster epoch: %w", err)
		}
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("cluster epoch: %w", err)
		}
		id := hex.EncodeToString(b[:])
		err = r.store.CAS(ctx, key, []byte(id), 0)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, kv.ErrConflict) {
			return "", fmt.Errorf("cluster epoch: %w", err)
		}
		// Another host made it first: read the winner.
	}
	return "", errors.New("cluster epoch: its key kept changing (made and removed at once), try again")
}
