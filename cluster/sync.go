// Package cluster makes a felt network declared on one host exist on every
// host of the cluster (issue 10), as Docker's old global-scope overlay did:
// Docker gives a remote driver local scope and never tells it a network's
// name, so felt learns the names from its own Docker engine and creates the
// declared networks there.
//
// Files: sync.go the level-triggered loop, decl.go declarations compared
// with and made from Docker's networks, docker.go the Docker Engine API
// client (the only importer of it), containers.go what the names loop
// reads through it (package names), self.go the plugin's own name,
// guard.go the rule that no plugin handler calls Docker.
//
// The loop never holds a lock across a Docker call and no handler waits for
// the loop: dockerd calls felt's handlers while it holds its own locks, and
// a network the loop creates comes back to felt as RequestPool and
// CreateNetwork calls. Handlers only write local records (Deleted) and kick
// the loop (Created).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// Records is the shared store's side: the network records and their
// declarations (lease.Registry).
type Records interface {
	ListNetworks(ctx context.Context) ([]lease.Network, error)
	Declare(ctx context.Context, pool netip.Prefix, d lease.Declaration) (lease.Network, error)
	Withdraw(ctx context.Context, pool netip.Prefix, uid, byHost string) error
	Epoch(ctx context.Context) (string, error)
	HoldsName(ctx context.Context, name string, pool netip.Prefix, uid string) (bool, error)
	WatchNetworks(ctx context.Context, index uint64) (uint64, error)
}

// Config holds the loop's dependencies.
type Config struct {
	Engine  Engine
	Records Records
	// State holds this host's felt networks and pools (written by the
	// drivers) and the loop's own membership and intent records.
	State  *state.Store
	HostID string
	// Resync is the period of a full pass without any trigger.
	Resync time.Duration
	Log    *slog.Logger
	Now    func() time.Time // nil: time.Now
}

// Backoff after a failed pass, or a watch that ended: from min, doubling
// to max, as the overlay's reconciler does.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Sync runs the loop and serves the network driver's hooks.
type Sync struct {
	cfg  Config
	kick chan struct{}

	mu       sync.Mutex
	reported map[string]string // what was last logged per subject, so a lasting state is logged once

	// retry holds, per declaration UID, when a create that failed may be
	// tried again and how long the wait after the next failure is. Only
	// the loop's goroutine uses it.
	retry map[string]retry
	// unlisted holds, per member network ID, when a pass first found it
	// missing from Docker's list. Only the loop's goroutine uses it.
	unlisted map[string]time.Time
	// unmatched holds, per intent (Docker network ID), when a pass first
	// found no declaration to withdraw for it. Only the loop's goroutine
	// uses it.
	unmatched map[string]time.Time
}

// withdrawGrace is how long an intent whose declaration the store does
// not hold (a wiped store, not declared again yet) is kept: a host that
// still knows the declaration declares it again, same UID, within a lease
// renewal check, and the intent then withdraws it. Meanwhile create skips
// the declaration here.
const withdrawGrace = 5 * time.Minute

// unlistedGrace is how long a member network may be missing from Docker's
// list before the loop takes it for lost. Docker stops listing a network
// as soon as its removal starts, then releases its pool through felt's
// IPAM (a Consul round trip, or many while Consul struggles), and only
// then calls DeleteNetwork, whose hook turns the membership into the
// intent that withdraws the declaration: a membership forgotten before
// that would leave the removal unnoticed, and the network made again.
const unlistedGrace = time.Minute

type retry struct {
	at   time.Time
	wait time.Duration
}

// Waits between creates of one declaration that keep failing: a conflict
// lasts until a user resolves it, and each try costs Docker and felt a
// RequestPool.
const (
	firstCreateRetry = 2 * time.Second
	maxCreateRetry   = 2 * time.Minute
)

func (s *Sync) due(uid string) bool {
	r, ok := s.retry[uid]
	return !ok || !s.cfg.Now().Before(r.at)
}

func (s *Sync) failed(uid string) {
	r := s.retry[uid]
	r.wait = min(max(2*r.wait, firstCreateRetry), maxCreateRetry)
	r.at = s.cfg.Now().Add(r.wait)
	s.retry[uid] = r
}

func (s *Sync) succeeded(uid string) { delete(s.retry, uid) }

// nextRetry is when the earliest failed create is due again.
// Only future times count: Run asks right after a pass, which tried every
// create then due; one it did not try (adopted meanwhile, or now behind
// another conflict) keeps a past time, which would make Run pass again and
// again without pause.
func (s *Sync) nextRetry() (time.Time, bool) {
	var first time.Time
	now := s.cfg.Now()
	for _, r := range s.retry {
		if r.at.After(now) && (first.IsZero() || r.at.Before(first)) {
			first = r.at
		}
	}
	return first, !first.IsZero()
}

// starting reports whether Docker refused a create because felt itself is
// not enabled yet: dockerd enables a plugin only after its Plugin.Activate
// returned, and the loop's first pass may come before that. Not a
// conflict: it passes in a moment.
func starting(err error) bool {
	return strings.Contains(err.Error(), "found but disabled")
}

// New returns a Sync; Run starts it.
func New(cfg Config) *Sync {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	return &Sync{cfg: cfg, kick: make(chan struct{}, 1), reported: map[string]string{}, retry: map[string]retry{},
		unlisted: map[string]time.Time{}, unmatched: map[string]time.Time{}}
}

// Kick asks for a pass soon; it never blocks.
func (s *Sync) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Created is the network driver's hook after CreateNetwork: a pass looks
// for the new network. Docker lists it only once the create returned, so
// the pass that Docker's create event triggers finds it; the later kick
// covers an events stream that is down.
func (s *Sync) Created(string) {
	s.Kick()
	time.AfterFunc(2*time.Second, s.Kick)
}

// Deleted is the network driver's hook in DeleteNetwork, before anything
// is removed: the user removed network id (of pool) on this host. It
// records the intent locally (Consul may be down; the loop withdraws the
// declaration) and drops the membership, so that the loop does not make the
// network again. It makes no Docker call and waits for nothing.
func (s *Sync) Deleted(ctx context.Context, id string, pool netip.Prefix) error {
	m, ok, err := s.cfg.State.ClusterMember(ctx, id)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	intent := state.ClusterIntent{ID: id, Pool: pool}
	if ok {
		intent.UID = m.UID
	}
	if err := s.cfg.State.PutClusterIntent(ctx, intent); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if err := s.cfg.State.DeleteClusterMember(ctx, id); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	s.Kick()
	return nil
}

// Run runs passes until ctx ends: on kicks, on changes of the network
// records, on Docker's network events, and every Resync.
func (s *Sync) Run(ctx context.Context) {
	go s.watchRecords(ctx)
	go s.watchEvents(ctx)
	s.cfg.Log.Info("cluster networks on: networks created here are declared to every felt host")
	backoff := minBackoff
	var failing error
	timer := time.NewTimer(0) // a first pass at once
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-timer.C:
		}
		err := s.Pass(ctx)
		if ctx.Err() != nil {
			return
		}
		next := s.cfg.Resync
		if at, ok := s.nextRetry(); ok {
			// A create that failed is due again before the resync:
			// Docker's answer may only have been that felt is still
			// being enabled (a host that just started).
			next = min(next, max(at.Sub(s.cfg.Now()), 0))
		}
		switch {
		case err != nil:
			if failing == nil || failing.Error() != err.Error() {
				s.cfg.Log.Warn("cluster sync failed; retrying", "err", err)
			}
			failing = err
			next = backoff
			backoff = min(2*backoff, maxBackoff)
		case failing != nil:
			s.cfg.Log.Info("cluster sync recovered")
			failing = nil
			backoff = minBackoff
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// watchRecords kicks a pass whenever a network record changes anywhere.
func (s *Sync) watchRecords(ctx context.Context) {
	var index uint64
	backoff := minBackoff
	for ctx.Err() == nil {
		next, err := s.cfg.Records.WatchNetworks(ctx, index)
		if err != nil {
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			index = 0
			continue
		}
		backoff = minBackoff
		if next != index {
			index = next
			s.Kick()
		}
	}
}

// watchEvents kicks a pass on each of Docker's network events (create,
// destroy, disconnect...). Events are only a trigger: after each reconnect
// a pass runs, so missed events do not matter.
func (s *Sync) watchEvents(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		start := time.Now()
		s.Kick()
		err := s.cfg.Engine.WatchEvents(ctx, s.Kick)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > maxBackoff {
			backoff = minBackoff
		}
		s.cfg.Log.Debug("cluster: Docker events ended; reconnecting", "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// view is what one pass reads: the desired state (records, epoch), Docker's
// felt networks, and this host's own records.
type view struct {
	epoch    string
	records  map[netip.Prefix]lease.Network
	docker   map[string]Net // by Docker ID
	byName   map[string]Net
	felt     map[string]state.Network // this host's felt networks, by Docker ID
	poolUser map[netip.Prefix]string  // pool → the Docker ID of this host's network on it
	ranges   map[netip.Prefix]netip.Prefix
	members  map[string]state.ClusterMember
	intents  map[string]state.ClusterIntent
}

// Pass brings this host's Docker networks and the cluster's declarations
// together once. It is idempotent: a pass cut short anywhere is finished by
// the next.
func (s *Sync) Pass(ctx context.Context) error {
	v, err := s.read(ctx)
	if err != nil {
		return err
	}
	if err := s.withdraw(ctx, v); err != nil {
		return err
	}
	var errs []error
	for _, m := range v.members {
		errs = append(errs, s.checkMember(ctx, v, m))
	}
	for _, n := range v.docker {
		errs = append(errs, s.declare(ctx, v, n))
	}
	live := map[string]bool{}
	for _, rec := range v.records {
		errs = append(errs, s.create(ctx, v, rec))
		if rec.Cluster.Live() {
			live[rec.Cluster.UID] = true
		}
	}
	for uid := range s.retry {
		if !live[uid] {
			delete(s.retry, uid) // withdrawn: nothing left to try
		}
	}
	for id := range s.unlisted {
		if _, ok := v.members[id]; !ok {
			delete(s.unlisted, id) // its membership went (the Deleted hook)
		}
	}
	s.forgetGone(v, live)
	return errors.Join(errs...)
}

func (s *Sync) read(ctx context.Context) (*view, error) {
	v := &view{records: map[netip.Prefix]lease.Network{}, docker: map[string]Net{}, byName: map[string]Net{},
		felt: map[string]state.Network{}, poolUser: map[netip.Prefix]string{}, ranges: map[netip.Prefix]netip.Prefix{},
		members: map[string]state.ClusterMember{}, intents: map[string]state.ClusterIntent{}}
	var err error
	if v.epoch, err = s.cfg.Records.Epoch(ctx); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	recs, err := s.cfg.Records.ListNetworks(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	for _, r := range recs {
		v.records[r.Pool] = r
	}
	// The epoch again: records listed just after a wipe, with the epoch
	// read just before it, would look like every declaration withdrawn
	// with its last lease in this epoch, and the pass would remove every
	// cluster network not in use.
	if again, err := s.cfg.Records.Epoch(ctx); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	} else if again != v.epoch {
		return nil, fmt.Errorf("store: its cluster epoch changed during the pass (the store was wiped or replaced); trying again")
	}
	nets, err := s.cfg.Engine.Networks(ctx)
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	for _, n := range nets {
		v.docker[n.ID] = n
		v.byName[n.Name] = n
	}
	// This host's records last: a network Docker listed has its felt
	// record by now (CreateNetwork wrote it before Docker stored the
	// network).
	feltNets, err := s.cfg.State.Networks(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range feltNets {
		v.felt[n.ID] = n
		v.poolUser[n.Pool] = n.ID
	}
	pools, err := s.cfg.State.Pools(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range pools {
		if p.Range.IsValid() {
			v.ranges[p.Pool] = p.Range
		}
	}
	members, err := s.cfg.State.ClusterMembers(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		v.members[m.ID] = m
	}
	intents, err := s.cfg.State.ClusterIntents(ctx)
	if err != nil {
		return nil, err
	}
	for _, i := range intents {
		v.intents[i.ID] = i
	}
	return v, nil
}

// withdraw turns the user's removals into withdrawn declarations: every
// host then removes its network of that declaration.
func (s *Sync) withdraw(ctx context.Context, v *view) error {
	for id, i := range v.intents {
		if i.UID == "" {
			// Not a member: nothing to withdraw. Kept while Docker
			// still lists the network (this pass's listing may predate
			// the removal), for declare to see.
			if _, listed := v.docker[id]; listed {
				continue
			}
		} else {
			if err := s.cfg.Records.Withdraw(ctx, i.Pool, i.UID, s.cfg.HostID); err != nil {
				return fmt.Errorf("withdraw network of pool %s: %w", i.Pool, err)
			}
			if rec, ok := v.records[i.Pool]; !ok || rec.Cluster == nil {
				// Nothing to withdraw: the store lost the declaration.
				// Kept a while, for a host that declares it again.
				first, seen := s.unmatched[id]
				if !seen {
					s.unmatched[id] = s.cfg.Now()
					continue
				}
				if s.cfg.Now().Sub(first) < withdrawGrace {
					continue
				}
			} else if rec.Cluster.Live() && rec.Cluster.UID == i.UID {
				s.cfg.Log.Info("cluster network removed: withdrawn from every host", "network", rec.Cluster.Name, "pool", i.Pool)
				// The rest of this pass must see it withdrawn, or
				// create would make it again right here.
				d := *rec.Cluster
				d.Removed = &lease.Removal{By: s.cfg.HostID, At: s.cfg.Now()}
				rec.Cluster = &d
				v.records[i.Pool] = rec
			}
		}
		if err := s.cfg.State.DeleteClusterIntent(ctx, id); err != nil {
			return err
		}
		delete(s.unmatched, id)
		delete(v.intents, id)
	}
	return nil
}

// checkMember follows the declaration of one of this host's member
// networks: confirms it, declares it again if its record lost it, or
// removes the network when the declaration was withdrawn.
func (s *Sync) checkMember(ctx context.Context, v *view, m state.ClusterMember) error {
	n, listed := v.docker[m.ID]
	if !listed {
		// Being removed (DeleteNetwork is yet to come: unlistedGrace),
		// or gone from Docker without the user removing it here (no
		// intent): dockerd lost it, or it went while felt was down.
		// Forget it after the grace; create makes it again while it is
		// declared.
		first, seen := s.unlisted[m.ID]
		if !seen {
			s.unlisted[m.ID] = s.cfg.Now()
			return nil
		}
		if s.cfg.Now().Sub(first) < unlistedGrace {
			return nil
		}
		delete(s.unlisted, m.ID)
		delete(v.members, m.ID)
		return s.cfg.State.DeleteClusterMember(ctx, m.ID)
	}
	delete(s.unlisted, m.ID)
	if m.Withdrawn {
		return s.remove(ctx, v, n, m, "withdrawn")
	}
	rec, recorded := v.records[m.Pool]
	d := rec.Cluster
	switch {
	case recorded && d.Live() && d.UID == m.UID:
		if !m.Confirmed || m.Epoch != v.epoch {
			m.Confirmed, m.Epoch = true, v.epoch
			v.members[m.ID] = m
			return s.cfg.State.PutClusterMember(ctx, m)
		}
		return nil
	case recorded && d != nil && d.UID == m.UID:
		return s.remove(ctx, v, n, m, "withdrawn by host "+d.Removed.By)
	case recorded && d.Live() && !m.Confirmed:
		// Another declaration won the pool before ours was written.
		delete(v.members, m.ID)
		s.report("net:"+m.ID, "cluster network not declared: its pool is declared as another network",
			"network", n.Name, "pool", m.Pool, "declared", d.Name, "by", d.By)
		return s.cfg.State.DeleteClusterMember(ctx, m.ID)
	case recorded && d != nil && m.Confirmed:
		// Withdrawn and declared anew (or that one withdrawn too):
		// ours is gone.
		return s.remove(ctx, v, n, m, "its pool was declared again as "+d.Name)
	case !recorded && m.Confirmed && m.Epoch == v.epoch:
		// Withdrawn, and the record went with the last lease.
		return s.remove(ctx, v, n, m, "withdrawn")
	case !recorded:
		// The shared store was wiped (a new epoch) or the record is not
		// written yet: this host's lease renewal records the network
		// again, then the declaration follows.
		return nil
	case m.Confirmed && m.Epoch == v.epoch:
		// The record lost its declaration in this store: an older felt
		// rewrote it (the name claim stays), or it went with the last
		// lease after a withdrawal and a lease made it again (this
		// host's renewal after an absence longer than the lease TTL, or
		// its create racing the withdrawal; the claim went with the
		// withdrawal). Declaring it again would undo the user's removal
		// on every host.
		held, err := s.cfg.Records.HoldsName(ctx, n.Name, m.Pool, m.UID)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if !held {
			return s.remove(ctx, v, n, m, "withdrawn")
		}
		return s.redeclare(ctx, v, n, m)
	default:
		// The record lost its declaration: the store was wiped and
		// refilled, or this host's own declaration was cut short.
		// Declare it again, same UID, as this host knows it.
		return s.redeclare(ctx, v, n, m)
	}
}

func (s *Sync) redeclare(ctx context.Context, v *view, n Net, m state.ClusterMember) error {
	d := declarationOf(n, v.ranges[m.Pool], s.cfg.HostID, s.cfg.Now())
	d.UID = m.UID
	if _, err := s.cfg.Records.Declare(ctx, m.Pool, d); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return nil // the record went meanwhile; the next pass sees why
		}
		if conflict(err) {
			s.report("net:"+m.ID, "cluster network not declared again: "+err.Error(), "network", n.Name, "pool", m.Pool)
			return nil
		}
		return fmt.Errorf("declare %s again: %w", n.Name, err)
	}
	s.cfg.Log.Info("cluster network declared again", "network", n.Name, "pool", m.Pool)
	m.Confirmed, m.Epoch = true, v.epoch
	v.members[m.ID] = m
	return s.cfg.State.PutClusterMember(ctx, m)
}

// remove removes this host's network n of a withdrawn declaration, unless
// containers still use it: nothing is ever disconnected by force. A later
// pass (Docker's disconnect event) tries again.
func (s *Sync) remove(ctx context.Context, v *view, n Net, m state.ClusterMember, why string) error {
	err := s.cfg.Engine.Remove(ctx, n.ID)
	if errors.Is(err, ErrInUse) {
		s.reportAt(slog.LevelInfo, "net:"+n.ID, "cluster network kept here: containers still use it; it is removed when the last one goes",
			"network", n.Name, "why", why)
		if m.Withdrawn {
			return nil
		}
		// Remembered here: the tombstone may not outlive the wait (a
		// wiped store), and the network must not be declared again.
		m.Withdrawn = true
		v.members[m.ID] = m
		return s.cfg.State.PutClusterMember(ctx, m)
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", n.Name, err)
	}
	s.forget("net:" + n.ID)
	s.cfg.Log.Info("cluster network removed here", "network", n.Name, "pool", m.Pool, "why", why)
	// Gone for the rest of this pass too: declare must not take it for a
	// network of this host's still to be declared.
	delete(v.members, m.ID)
	delete(v.docker, n.ID)
	delete(v.felt, n.ID)
	if v.byName[n.Name].ID == n.ID {
		delete(v.byName, n.Name)
	}
	if v.poolUser[m.Pool] == n.ID {
		delete(v.poolUser, m.Pool)
	}
	return s.cfg.State.DeleteClusterMember(ctx, m.ID)
}

// declare records this host's network n for every host, or adopts the
// declaration it already matches.
func (s *Sync) declare(ctx context.Context, v *view, n Net) error {
	if _, ok := v.members[n.ID]; ok {
		return nil
	}
	if _, ok := v.intents[n.ID]; ok {
		return nil // being removed
	}
	if localOnly(n) {
		return nil
	}
	fn, ok := v.felt[n.ID]
	if !ok {
		return nil // not (yet) a network felt made: its create failed or is under way
	}
	rec, ok := v.records[fn.Pool]
	if !ok {
		return nil // recorded again by this host's next lease renewal
	}
	rng := v.ranges[fn.Pool]
	if d := rec.Cluster; d.Live() {
		if why := differs(d, n, rng); why != "" {
			s.report("net:"+n.ID, "cluster network conflict: this host's network uses a pool declared as another network; left alone",
				"network", n.Name, "pool", fn.Pool, "declared", d.Name, "by", d.By, "difference", why)
			return nil
		}
		s.cfg.Log.Info("cluster network adopted: this host's network is the declared one", "network", n.Name, "pool", fn.Pool)
		return s.join(ctx, v, n.ID, d.UID, fn.Pool)
	}
	d := declarationOf(n, rng, s.cfg.HostID, s.cfg.Now())
	// The membership first, unconfirmed: if the user removes the network
	// while it is being declared, Deleted finds it and leaves an intent
	// with its UID, and the declaration is withdrawn.
	m := state.ClusterMember{ID: n.ID, UID: d.UID, Pool: fn.Pool, Epoch: v.epoch}
	if err := s.cfg.State.PutClusterMember(ctx, m); err != nil {
		return err
	}
	v.members[n.ID] = m
	if _, err := s.cfg.Records.Declare(ctx, fn.Pool, d); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			// The record went meanwhile: withdrawn with its last lease.
			delete(v.members, n.ID)
			return s.cfg.State.DeleteClusterMember(ctx, n.ID)
		}
		if conflict(err) {
			delete(v.members, n.ID)
			s.report("net:"+n.ID, "cluster network conflict: not declared, left to this host: "+err.Error(), "network", n.Name, "pool", fn.Pool)
			return s.cfg.State.DeleteClusterMember(ctx, n.ID)
		}
		return fmt.Errorf("declare %s: %w", n.Name, err)
	}
	s.forget("net:" + n.ID)
	s.cfg.Log.Info("cluster network declared: every felt host creates it", "network", n.Name, "pool", fn.Pool)
	return s.join(ctx, v, n.ID, d.UID, fn.Pool)
}

// join records network id as a confirmed member of declaration uid,
// unless the user removed it meanwhile: then its intent gets the UID, and
// the next pass withdraws the declaration.
func (s *Sync) join(ctx context.Context, v *view, id, uid string, pool netip.Prefix) error {
	if i, ok, err := s.cfg.State.ClusterIntent(ctx, id); err != nil {
		return err
	} else if ok {
		i.UID = uid
		delete(v.members, id)
		return errors.Join(s.cfg.State.PutClusterIntent(ctx, i), s.cfg.State.DeleteClusterMember(ctx, id))
	}
	m := state.ClusterMember{ID: id, UID: uid, Pool: pool, Epoch: v.epoch, Confirmed: true}
	v.members[id] = m
	return s.cfg.State.PutClusterMember(ctx, m)
}

// create makes the network of a live declaration that this host lacks, or
// adopts a same-named network that matches it. Conflicts are reported and
// left alone.
func (s *Sync) create(ctx context.Context, v *view, rec lease.Network) error {
	d := rec.Cluster
	if !d.Live() {
		return nil
	}
	for _, m := range v.members {
		if m.UID == d.UID {
			return nil
		}
	}
	for _, i := range v.intents {
		if i.UID == d.UID {
			return nil // the user removed it here; being withdrawn
		}
	}
	subject := "decl:" + d.UID
	if n, ok := v.byName[d.Name]; ok {
		if _, member := v.members[n.ID]; member {
			s.report(subject, "cluster network conflict: a network of this name on this host belongs to another declaration; left alone",
				"network", d.Name, "pool", rec.Pool, "by", d.By)
			return nil
		}
		fn, felt := v.felt[n.ID]
		why := differs(d, n, v.ranges[rec.Pool])
		if felt && fn.Pool != rec.Pool {
			why = fmt.Sprintf("pool %s, not %s", fn.Pool, rec.Pool)
		}
		if !felt || why != "" {
			s.report(subject, "cluster network conflict: this host has a different network of the declared name; left alone",
				"network", d.Name, "pool", rec.Pool, "by", d.By, "difference", why)
			return nil
		}
		s.cfg.Log.Info("cluster network adopted", "network", d.Name, "pool", rec.Pool)
		return s.join(ctx, v, n.ID, d.UID, rec.Pool)
	}
	if id, ok := v.poolUser[rec.Pool]; ok {
		s.report(subject, "cluster network conflict: this host has another network on the declared pool; left alone",
			"network", d.Name, "pool", rec.Pool, "by", d.By, "local", v.docker[id].Name)
		return nil
	}
	if !s.due(d.UID) {
		return nil // a create failed lately: not on every pass
	}
	id, warnings, err := s.cfg.Engine.Create(ctx, createRequest(d, rec.Pool))
	if err != nil {
		// Docker's answer names the cause: a name that another driver's
		// network holds, a pool felt's IPAM refuses here... It lasts
		// until someone changes that, so the next try waits.
		s.failed(d.UID)
		if starting(err) {
			s.cfg.Log.Debug("cluster network not created yet: felt is being enabled", "network", d.Name, "err", err)
			return nil
		}
		s.report(subject, "cluster network conflict: not created here: "+err.Error(), "network", d.Name, "pool", rec.Pool, "by", d.By)
		return nil
	}
	if len(warnings) > 0 {
		// A failure like any other: the wait grows. (Resetting it first
		// would make every try wait 2 s, and CreateNetwork's own
		// 2 s kick would make and remove a duplicate for ever.)
		s.failed(d.UID)
		// Docker before 25 makes a second network of a name it already
		// has and only warns: that one is felt's, and goes again.
		rmErr := s.cfg.Engine.Remove(ctx, id)
		s.report(subject, "cluster network conflict: another network of the declared name exists here; left alone",
			"network", d.Name, "pool", rec.Pool, "by", d.By, "docker", fmt.Sprint(warnings), "undo", errString(rmErr))
		return nil
	}
	s.succeeded(d.UID)
	s.forget(subject)
	s.cfg.Log.Info("cluster network created here", "network", d.Name, "pool", rec.Pool, "declared by", d.By)
	v.byName[d.Name] = Net{ID: id, Name: d.Name}
	v.poolUser[rec.Pool] = id
	return s.join(ctx, v, id, d.UID, rec.Pool)
}

// conflict reports whether a Declare error is a lasting conflict, to be
// reported, not an outage to retry: a name or pool another declaration
// holds, a declaration the user withdrew meanwhile, or a network the
// cluster cannot name (Docker accepts names such as "a/b" that no store key
// may hold).
func conflict(err error) bool {
	return errors.Is(err, lease.ErrNameTaken) || errors.Is(err, lease.ErrDeclared) ||
		errors.Is(err, lease.ErrWithdrawn) || errors.Is(err, lease.ErrInvalidDeclaration)
}

// report logs msg for subject at warn once, at debug while it repeats: a
// conflict lasts, and the loop sees it on every pass.
func (s *Sync) report(subject, msg string, args ...any) {
	s.reportAt(slog.LevelWarn, subject, msg, args...)
}

// reportAt is report at level.
func (s *Sync) reportAt(level slog.Level, subject, msg string, args ...any) {
	s.mu.Lock()
	same := s.reported[subject] == msg
	s.reported[subject] = msg
	s.mu.Unlock()
	if same {
		level = slog.LevelDebug
	}
	s.cfg.Log.Log(context.Background(), level, msg, args...)
}

// forget ends what report remembers of subject: its state was resolved.
func (s *Sync) forget(subject string) {
	s.mu.Lock()
	delete(s.reported, subject)
	s.mu.Unlock()
}

// forgetGone ends what report remembers of networks Docker no longer
// lists and declarations no longer live: without it a long-running felt
// keeps an entry for every one that was ever in conflict.
func (s *Sync) forgetGone(v *view, live map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for subject := range s.reported {
		if id, ok := strings.CutPrefix(subject, "net:"); ok {
			if _, listed := v.docker[id]; !listed {
				delete(s.reported, subject)
			}
		} else if uid, ok := strings.CutPrefix(subject, "decl:"); ok && !live[uid] {
			delete(s.reported, subject)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "removed"
	}
	return err.Error()
}
