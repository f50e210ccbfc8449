// Package storeformat versions the layout of what felt stores, so that a
// later felt can change it without losing anyone's state: this host's own
// records (under "local/" in the embedded store) and the records hosts share
// (under FELT_KV_PREFIX in Consul, or in the embedded store without Consul).
//
// Each of these areas holds a format record at <prefix>format, e.g.
// {"version":1,"writer":"felt 1.2.0"}. Ensure writes it when absent, runs
// the registered migration steps when it names an older format, and refuses,
// with an error that says what to do, a format newer than this felt knows:
// an older felt must never rewrite records it does not understand.
package storeformat

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/felt-net/felt/kv"
)

// Key is the format record's key, under an area's prefix.
const Key = "format"

// Record is the format record.
type Record struct {
	// Version is the format the area's records are in.
	Version int `json:"version"`
	// Writer names the felt that wrote the record (created or migrated
	// the area), e.g. "felt 1.2.0": for people reading the store.
	Writer string `json:"writer,omitempty"`
	// Migrating, when set, says a felt is running the step from Version
	// to Migrating.To: the others wait for it (see Ensure).
	Migrating *Claim `json:"migrating,omitempty"`
}

// Claim marks the format record while one felt runs a migration step.
type Claim struct {
	// To is the format the step migrates to (Version+1).
	To int `json:"to"`
	// By names the claimant, Writer and a random token, so that a felt
	// knows its own claim from another felt of the same version.
	By string `json:"by"`
	// Since is when the claim was taken: a claim older than
	// Area.ClaimTimeout is taken to be a crashed felt's, and taken over.
	Since time.Time `json:"since"`
}

// Step migrates an area from one format to the next. It must be idempotent:
// a crash between the step and the record's update runs it again, and so
// does a felt that finds a store without a record (a felt from before format
// records existed, or a store wiped and refilled). It cannot be idempotent
// on data already in a later format, and need not be: Ensure runs a step
// only under a claim on the format record (see Ensure), so one felt at a
// time and only on its own format's data. It should still tolerate a second
// run alongside it: a claim held past Area.ClaimTimeout is taken over, and
// its holder may be merely slow.
type Step struct {
	// Name says what the step changes, for logs and errors.
	Name string
	// Migrate rewrites the records under prefix in s.
	Migrate func(ctx context.Context, s kv.Store, prefix string) error
}

// Format is what this felt knows of one area's format: the version it
// writes, and the steps that bring every older version up to it.
type Format struct {
	// Version is the newest format this felt understands, the one it
	// writes. Format 1 is the layout of felt before format records.
	Version int
	// Steps[i] migrates format i+1 to i+2, so len(Steps) == Version-1.
	Steps []Step
}

// Area is one versioned area of a store: the records under Prefix.
type Area struct {
	Store  kv.Store
	Prefix string // ends in "/"; the record is Prefix + Key
	Format Format
	// Writer names this felt in the records it writes ("felt 1.2.0").
	Writer string
	// Where names the area in errors ("local state in /var/lib/felt/felt.db").
	Where string
	// Remedy ends the error about a newer format, after "upgrade felt, or"
	// ("give this felt another FELT_KV_PREFIX").
	Remedy string
	// ClaimTimeout is how long a claim to run a migration step holds
	// before another felt takes it over, taking its holder for crashed;
	// 0 means DefaultClaimTimeout. Every step must finish well within it.
	ClaimTimeout time.Duration
}

// DefaultClaimTimeout is Area.ClaimTimeout's default: far longer than a
// step over felt's records takes, short enough that the felts waiting for a
// crashed one's claim start within a minute or so.
const DefaultClaimTimeout = time.Minute

// TooNewError says the area holds a format newer than this felt knows. Its
// records are left untouched.
type TooNewError struct {
	Where  string
	Found  Record
	Known  int
	Remedy string
}

func (e *TooNewError) Error() string {
	by := ""
	if e.Found.Writer != "" {
		by = ", written by " + e.Found.Writer
	}
	remedy := "upgrade felt"
	if e.Remedy != "" {
		remedy += ", or " + e.Remedy
	}
	return fmt.Sprintf("%s: state written by a newer felt (format %d%s; this felt understands up to %d): %s",
		e.Where, e.Found.Version, by, e.Known, remedy)
}

// maxConflicts bounds the retries when other felts move the record at the
// same time (each retry follows someone else's successful write, and a
// conflict just means: read it again).
const maxConflicts = 10

// Ensure brings the area to this felt's format and returns its record:
// it writes the record when absent, migrates an older format step by step
// (the record advanced after each step, so a crash resumes where it
// stopped), and returns a *TooNewError for a newer one. Every write of the
// record is a compare-and-set, so felts sharing a store agree.
//
// A step runs only under a claim: the felt first rewrites the record it
// read as format N into "format N, migrating to N+1 by me", by
// compare-and-set on the index it read, so the step starts only if the
// record has not moved since, and no other felt starts a step meanwhile.
// Without it a felt that read format N, then lost the race, would run step
// N on data another felt had already taken to N+2. The others wait for the
// record to change; a claim older than ClaimTimeout is a crashed felt's and
// is taken over the same way. A felt that fails under its claim releases it.
func (a Area) Ensure(ctx context.Context) (_ Record, err error) {
	f := a.Format
	if f.Version < 1 || len(f.Steps) != f.Version-1 {
		return Record{}, fmt.Errorf("%s: format %d needs %d migration steps, %d registered", a.Where, f.Version, max(f.Version-1, 0), len(f.Steps))
	}
	key := a.Prefix + Key
	me := a.Writer + " " + token()
	defer func() {
		if err != nil {
			a.release(ctx, key, me)
		}
	}()
	// Undisturbed, Ensure reads the record at most 2*f.Version times (a
	// create; per step, one read to claim and one to run it; the final
	// read). Every other round follows someone else's write: a conflict, a
	// claim released, or the record vanishing after it was written (a
	// store wiped meanwhile). Bounding the rounds, not only the
	// conflicts, ends them all.
	for rounds := 0; ; rounds++ {
		if rounds > 2*f.Version+maxConflicts {
			return Record{}, fmt.Errorf("%s: format record %s kept changing under us (%d tries)", a.Where, key, rounds)
		}
		p, err := a.Store.Get(ctx, key)
		if errors.Is(err, kv.ErrNotFound) {
			rec, err := a.create(ctx, key)
			if errors.Is(err, kv.ErrConflict) {
				continue
			}
			if err != nil || rec.Version == f.Version {
				return rec, err
			}
			continue // written at format 1: migrate it
		}
		if err != nil {
			return Record{}, fmt.Errorf("%s: reading format record: %w", a.Where, err)
		}
		var rec Record
		if err := json.Unmarshal(p.Value, &rec); err != nil || rec.Version < 1 || rec.Migrating != nil && rec.Migrating.To != rec.Version+1 {
			// Not ours to repair: it may be a newer felt's record.
			return Record{}, fmt.Errorf("%s: format record %s is unreadable (%q): fix or delete it by hand", a.Where, key, p.Value)
		}
		c := rec.Migrating
		switch {
		case rec.Version > f.Version:
			return rec, &TooNewError{Where: a.Where, Found: rec, Known: f.Version, Remedy: a.Remedy}
		case c != nil && c.To > f.Version:
			// A newer felt is taking the records past what we know.
			found := Record{Version: c.To, Writer: rec.Writer}
			return rec, &TooNewError{Where: a.Where, Found: found, Known: f.Version, Remedy: a.Remedy}
		case rec.Version == f.Version:
			return rec, nil
		}
		if c != nil && c.By != me {
			if until := c.Since.Add(a.claimTimeout()); time.Now().Before(until) {
				if err := a.waitChange(ctx, key, p.ModifyIndex, until); err != nil {
					return rec, fmt.Errorf("%s: waiting for %s to migrate format %d to %d: %w", a.Where, c.By, rec.Version, c.To, noConflict(err))
				}
				continue
			}
			// Expired: its holder crashed. Take it over below.
		}
		if c == nil || c.By != me {
			claim := Record{Version: rec.Version, Writer: a.Writer, Migrating: &Claim{To: rec.Version + 1, By: me, Since: time.Now().UTC()}}
			if err := a.Store.CAS(ctx, key, encode(claim), p.ModifyIndex); err != nil && !errors.Is(err, kv.ErrConflict) {
				return rec, fmt.Errorf("%s: claiming the migration of format %d to %d: %w", a.Where, rec.Version, rec.Version+1, noConflict(err))
			}
			continue // read it again: ours, or someone else's
		}
		step := f.Steps[rec.Version-1]
		if err := step.Migrate(ctx, a.Store, a.Prefix); errors.Is(err, kv.ErrConflict) {
			continue // a record changed under the step: run it again (the claim is still ours)
		} else if err != nil {
			return rec, fmt.Errorf("%s: migrating format %d to %d (%s): %w", a.Where, rec.Version, rec.Version+1, step.Name, noConflict(err))
		}
		next := Record{Version: rec.Version + 1, Writer: a.Writer}
		if err := a.Store.CAS(ctx, key, encode(next), p.ModifyIndex); err != nil && !errors.Is(err, kv.ErrConflict) {
			return rec, fmt.Errorf("%s: recording format %d: %w", a.Where, next.Version, noConflict(err))
		}
	}
}

func (a Area) claimTimeout() time.Duration {
	if a.ClaimTimeout > 0 {
		return a.ClaimTimeout
	}
	return DefaultClaimTimeout
}

// waitChange returns once the record at key is no longer at index (changed
// or gone), or at until (the claim it holds has expired), whichever is first.
func (a Area) waitChange(ctx context.Context, key string, index uint64, until time.Time) error {
	wctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	// Wait's index is the store's, not the record's: take it from List.
	_, storeIdx, err := a.Store.List(wctx, key)
	for err == nil {
		var p kv.Pair
		p, err = a.Store.Get(wctx, key)
		if errors.Is(err, kv.ErrNotFound) || err == nil && p.ModifyIndex != index {
			return nil
		}
		if err == nil {
			_, storeIdx, err = a.Store.Wait(wctx, key, storeIdx)
		}
	}
	if ctx.Err() == nil && wctx.Err() != nil {
		return nil // the claim expired: read the record again
	}
	return err
}

// release gives up this felt's claim, if the record still holds it, when
// Ensure fails: the others need not wait for it to expire. Best effort: a
// claim left behind expires.
func (a Area) release(ctx context.Context, key, me string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	p, err := a.Store.Get(ctx, key)
	if err != nil {
		return
	}
	var rec Record
	if json.Unmarshal(p.Value, &rec) != nil || rec.Migrating == nil || rec.Migrating.By != me {
		return
	}
	_ = a.Store.CAS(ctx, key, encode(Record{Version: rec.Version, Writer: rec.Writer}), p.ModifyIndex)
}

// token tells this Ensure's claims from those of other felts, even ones
// with the same Writer.
func token() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails (crypto/rand's documented contract)
	return hex.EncodeToString(b)
}

// create writes the record of an area that has none: this felt's format if
// the area is empty, else format 1, the layout every felt wrote before
// format records existed, which Ensure then migrates.
func (a Area) create(ctx context.Context, key string) (Record, error) {
	pairs, _, err := a.Store.List(ctx, a.Prefix)
	if err != nil {
		return Record{}, fmt.Errorf("%s: looking for existing records: %w", a.Where, err)
	}
	rec := Record{Version: a.Format.Version, Writer: a.Writer}
	for _, p := range pairs {
		if p.Key != key {
			rec.Version = 1
			break
		}
	}
	if err := a.Store.CAS(ctx, key, encode(rec), 0); err != nil {
		if errors.Is(err, kv.ErrConflict) {
			return Record{}, err
		}
		return Record{}, fmt.Errorf("%s: writing format record: %w", a.Where, err)
	}
	return rec, nil
}

// noConflict returns err, but never as kv.ErrConflict: Ensure's errors
// reach the callers of Guard's writes, and the lease code reads a conflict
// as "my own key changed: read it again" (or, deleting, "already gone").
func noConflict(err error) error {
	if errors.Is(err, kv.ErrConflict) {
		return errors.New(err.Error())
	}
	return err
}

func encode(r Record) []byte {
	b, _ := json.Marshal(r) // two plain fields: cannot fail
	return b
}
