package storeformat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/kv/kvtest"
	"github.com/felt-net/felt/testkit/consul"
)

// The same suite against both stores felt keeps state in, each subtest
// under its own prefix (so one Consul agent serves them all).

func TestEmbedded(t *testing.T) {
	run(t, func(t *testing.T) kv.Store {
		s, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestConsul(t *testing.T) {
	agent := consul.Start(t, consul.Options{})
	run(t, func(t *testing.T) kv.Store {
		s, err := consulkv.New(agent.APIConfig())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// run runs the suite with kv/kvtest's runner, each subtest under its own
// prefix "sftest/<subtest>-<nanoseconds>/".
func run(t *testing.T, newStore func(t *testing.T) kv.Store) {
	kvtest.Suite(t, "sftest", newStore, []kvtest.Case{
		{Name: "FreshAreaGetsThisFormat", Fn: testFresh},
		{Name: "FreshAreaSkipsMigrations", Fn: testFreshSkipsSteps},
		{Name: "RecordedFormatKept", Fn: testKept},
		{Name: "AreaWithoutRecordIsFormat1", Fn: testLegacy},
		{Name: "MigratesStepByStep", Fn: testStepByStep},
		{Name: "FailedStepResumes", Fn: testFailedStepResumes},
		{Name: "NewerFormatRefused", Fn: testTooNew},
		{Name: "UnreadableRecordRefused", Fn: testUnreadable},
		{Name: "OtherPrefixesIgnored", Fn: testOtherPrefix},
		{Name: "ConcurrentFelts", Fn: testConcurrent},
		{Name: "GuardChecksBeforeFirstWrite", Fn: testGuard},
		{Name: "GuardRefusesWritesToNewerFormat", Fn: testGuardTooNew},
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func area(s kv.Store, prefix string, f Format) Area {
	return Area{Store: s, Prefix: prefix, Format: f, Writer: "felt test", Where: "test state", Remedy: "use another prefix"}
}

func record(t *testing.T, s kv.Store, prefix string) (Record, uint64) {
	t.Helper()
	p, err := s.Get(ctx(t), prefix+Key)
	if err != nil {
		t.Fatalf("format record: %v", err)
	}
	var r Record
	if err := json.Unmarshal(p.Value, &r); err != nil {
		t.Fatalf("format record %q: %v", p.Value, err)
	}
	return r, p.ModifyIndex
}

func put(t *testing.T, s kv.Store, key, value string) {
	t.Helper()
	if err := s.Put(ctx(t), key, []byte(value)); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s kv.Store, key string) string {
	t.Helper()
	p, err := s.Get(ctx(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return string(p.Value)
}

// rename is a fake format change for the tests: format N+1 stores every
// record "x" as "x+N". It is idempotent, as a real step must be.
func rename(n int, calls *atomic.Int32) Step {
	suffix := fmt.Sprintf("+%d", n)
	return Step{Name: fmt.Sprintf("suffix %s", suffix), Migrate: func(ctx context.Context, s kv.Store, prefix string) error {
		if calls != nil {
			calls.Add(1)
		}
		pairs, _, err := s.List(ctx, prefix+"data/")
		if err != nil {
			return err
		}
		for _, p := range pairs {
			if strings.HasSuffix(string(p.Value), suffix) {
				continue
			}
			if err := s.CAS(ctx, p.Key, append(p.Value, suffix...), p.ModifyIndex); err != nil && !errors.Is(err, kv.ErrConflict) {
				return err
			}
		}
		return nil
	}}
}

func testFresh(t *testing.T, s kv.Store, prefix string) {
	rec, err := area(s, prefix, Local()).Ensure(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := Record{Version: 1, Writer: "felt test"}
	if got, _ := record(t, s, prefix); rec != want || got != want {
		t.Fatalf("Ensure returned %+v and stored %+v; want %+v", rec, got, want)
	}
	if raw := get(t, s, prefix+Key); raw != `{"version":1,"writer":"felt test"}` {
		t.Fatalf("stored record %s", raw)
	}
}

func testFreshSkipsSteps(t *testing.T, s kv.Store, prefix string) {
	var calls atomic.Int32
	f := Format{Version: 3, Steps: []Step{rename(1, &calls), rename(2, &calls)}}
	if _, err := area(s, prefix, f).Ensure(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got, _ := record(t, s, prefix); got.Version != 3 || calls.Load() != 0 {
		t.Fatalf("empty area: record %+v after %d migration steps; want format 3 and no step", got, calls.Load())
	}
}

func testKept(t *testing.T, s kv.Store, prefix string) {
	a := area(s, prefix, Local())
	if _, err := a.Ensure(ctx(t)); err != nil {
		t.Fatal(err)
	}
	_, idx := record(t, s, prefix)
	a.Writer = "felt later"
	rec, err := a.Ensure(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got, idx2 := record(t, s, prefix); idx2 != idx || rec.Writer != "felt test" || got.Writer != "felt test" {
		t.Fatalf("second Ensure rewrote the record: %+v (index %d, was %d), returned %+v", got, idx2, idx, rec)
	}
}

func testLegacy(t *testing.T, s kv.Store, prefix string) {
	// What a felt from before format records left: data, no record.
	put(t, s, prefix+"data/a", "x")
	var calls atomic.Int32
	rec, err := area(s, prefix, Format{Version: 2, Steps: []Step{rename(1, &calls)}}).Ensure(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := record(t, s, prefix); got != (Record{Version: 2, Writer: "felt test"}) || rec != got {
		t.Fatalf("record %+v, returned %+v; want format 2", got, rec)
	}
	if v := get(t, s, prefix+"data/a"); v != "x+1" || calls.Load() != 1 {
		t.Fatalf("data %q after %d step runs; want x+1 after one", v, calls.Load())
	}

	// Today's formats: an old area is simply format 1.
	prefix2 := prefix + "today/"
	put(t, s, prefix2+"data/a", "x")
	if rec, err := area(s, prefix2, Shared()).Ensure(ctx(t)); err != nil || rec.Version != 1 {
		t.Fatalf("Ensure = %+v, %v; want format 1", rec, err)
	}
}

func testStepByStep(t *testing.T, s kv.Store, prefix string) {
	put(t, s, prefix+Key, `{"version":1,"writer":"felt old"}`)
	put(t, s, prefix+"data/a", "x")
	put(t, s, prefix+"data/b", "y")
	f := Format{Version: 3, Steps: []Step{rename(1, nil), rename(2, nil)}}
	if _, err := area(s, prefix, f).Ensure(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if a, b := get(t, s, prefix+"data/a"), get(t, s, prefix+"data/b"); a != "x+1+2" || b != "y+1+2" {
		t.Fatalf("data %q %q; want the steps applied in order: x+1+2 y+1+2", a, b)
	}
	if got, _ := record(t, s, prefix); got != (Record{Version: 3, Writer: "felt test"}) {
		t.Fatalf("record %+v; want format 3 by felt test", got)
	}
}

func testFailedStepResumes(t *testing.T, s kv.Store, prefix string) {
	put(t, s, prefix+Key, `{"version":1}`)
	put(t, s, prefix+"data/a", "x")
	var first atomic.Int32
	broken := Step{Name: "broken", Migrate: func(context.Context, kv.Store, string) error { return errors.New("disk on fire") }}
	f := Format{Version: 3, Steps: []Step{rename(1, &first), broken}}
	_, err := area(s, prefix, f).Ensure(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "migrating format 2 to 3 (broken): disk on fire") {
		t.Fatalf("Ensure error = %v; want it to name the failed step", err)
	}
	if got, _ := record(t, s, prefix); got.Version != 2 {
		t.Fatalf("record %+v after step 2 failed; want format 2 (step 1 done)", got)
	}
	f.Steps[1] = rename(2, nil)
	if _, err := area(s, prefix, f).Ensure(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if v := get(t, s, prefix+"data/a"); v != "x+1+2" || first.Load() != 1 {
		t.Fatalf("data %q, step 1 run %d times; want x+1+2, step 1 once", v, first.Load())
	}
}

func testTooNew(t *testing.T, s kv.Store, prefix string) {
	newer := `{"version":3,"writer":"felt 9.0.0"}`
	put(t, s, prefix+Key, newer)
	put(t, s, prefix+"data/a", "x")
	_, err := area(s, prefix, Local()).Ensure(ctx(t))
	var tooNew *TooNewError
	if !errors.As(err, &tooNew) || tooNew.Found.Version != 3 || tooNew.Known != 1 {
		t.Fatalf("Ensure error = %#v; want a TooNewError for format 3", err)
	}
	want := "test state: state written by a newer felt (format 3, written by felt 9.0.0; this felt understands up to 1): upgrade felt, or use another prefix"
	if err.Error() != want {
		t.Fatalf("error text\n%s\nwant\n%s", err, want)
	}
	if get(t, s, prefix+Key) != newer || get(t, s, prefix+"data/a") != "x" {
		t.Fatal("a newer format's records were rewritten")
	}
}

func testUnreadable(t *testing.T, s kv.Store, prefix string) {
	for i, bad := range []string{`garbage`, `{"version":0}`, `{"version":-4}`, `{"version":"2"}`, `[]`, ``} {
		p := fmt.Sprintf("%s%d/", prefix, i)
		put(t, s, p+Key, bad)
		_, err := area(s, p, Local()).Ensure(ctx(t))
		if err == nil || !strings.Contains(err.Error(), "format record "+p+Key+" is unreadable") {
			t.Fatalf("record %q: Ensure error = %v; want it named unreadable", bad, err)
		}
		if got := get(t, s, p+Key); got != bad {
			t.Fatalf("unreadable record %q was overwritten with %q", bad, got)
		}
	}
}

func testOtherPrefix(t *testing.T, s kv.Store, prefix string) {
	put(t, s, prefix+"other/data/a", "x")                      // another area's data
	put(t, s, strings.TrimSuffix(prefix, "/")+"x/data/a", "x") // shares the prefix's characters, not its slash
	var calls atomic.Int32
	mine := prefix + "mine/"
	if _, err := area(s, mine, Format{Version: 2, Steps: []Step{rename(1, &calls)}}).Ensure(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 0 {
		t.Fatal("data under another prefix made an empty area count as format 1")
	}
}

func testConcurrent(t *testing.T, s kv.Store, prefix string) {
	put(t, s, prefix+"data/a", "x")
	f := Format{Version: 3, Steps: []Step{rename(1, nil), rename(2, nil)}}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := area(s, prefix, f)
			a.Writer = fmt.Sprintf("felt %d", i)
			if _, err := a.Ensure(ctx(t)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, _ := record(t, s, prefix); got.Version != 3 {
		t.Fatalf("record %+v; want format 3", got)
	}
	if v := get(t, s, prefix+"data/a"); v != "x+1+2" {
		t.Fatalf("data %q; want x+1+2 however many felts migrated at once", v)
	}
}

func testGuard(t *testing.T, s kv.Store, prefix string) {
	g := Guard(area(s, prefix, Shared()))
	if _, err := g.Get(ctx(t), prefix+"data/a"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get = %v; want not found", err)
	}
	if _, _, err := g.List(ctx(t), prefix); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx(t), prefix+Key); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("reads wrote the format record (Get = %v): reads must not", err)
	}
	if err := g.CAS(ctx(t), prefix+"data/a", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := record(t, s, prefix); got.Version != 1 {
		t.Fatalf("record after the first write %+v; want format 1", got)
	}
	// Checked once: a record that changes later is not looked at again
	// by this felt (the next start checks it).
	put(t, s, prefix+Key, `{"version":7}`)
	if err := g.Put(ctx(t), prefix+"data/b", []byte("y")); err != nil {
		t.Fatalf("Put after a successful check: %v", err)
	}
}

func testGuardTooNew(t *testing.T, s kv.Store, prefix string) {
	put(t, s, prefix+Key, `{"version":2,"writer":"felt 2.0.0"}`)
	put(t, s, prefix+"data/a", "x")
	g := Guard(area(s, prefix, Shared()))
	if v, err := g.Get(ctx(t), prefix+"data/a"); err != nil || string(v.Value) != "x" {
		t.Fatalf("Get = %v, %v: reads pass through", v, err)
	}
	writes := map[string]func() error{
		"put":        func() error { return g.Put(ctx(t), prefix+"data/a", []byte("old")) },
		"cas":        func() error { return g.CAS(ctx(t), prefix+"data/b", []byte("old"), 0) },
		"delete":     func() error { return g.Delete(ctx(t), prefix+"data/a") },
		"delete-cas": func() error { return g.DeleteCAS(ctx(t), prefix+"data/a", 1) },
	}
	for name, w := range writes {
		var tooNew *TooNewError
		if err := w(); !errors.As(err, &tooNew) {
			t.Errorf("%s: error %v; want a TooNewError", name, err)
		}
	}
	if get(t, s, prefix+"data/a") != "x" {
		t.Fatal("data written by a newer felt was changed")
	}
	if _, err := s.Get(ctx(t), prefix+"data/b"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("a refused CAS wrote anyway: %v", err)
	}
	// Checked again on the next write until it succeeds.
	if err := s.Delete(ctx(t), prefix+Key); err != nil {
		t.Fatal(err)
	}
	if err := g.Put(ctx(t), prefix+"data/c", []byte("z")); err != nil {
		t.Fatalf("Put once the record is gone: %v", err)
	}
}

func TestBadFormatDefinition(t *testing.T) {
	s, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range []Format{{Version: 0}, {Version: 2}, {Version: 1, Steps: []Step{rename(1, nil)}}} {
		if _, err := area(s, "p/", f).Ensure(context.Background()); err == nil || !strings.Contains(err.Error(), "migration steps") {
			t.Errorf("format %d with %d steps: error %v; want one about the steps", f.Version, len(f.Steps), err)
		}
	}
	if _, err := s.Get(context.Background(), "p/"+Key); !errors.Is(err, kv.ErrNotFound) {
		t.Fatal("a bad format definition wrote a record")
	}
}

// TestRegistry: the formats felt ships have a step per version, so Ensure
// accepts them.
func TestRegistry(t *testing.T) {
	for name, f := range map[string]Format{"local": Local(), "shared": Shared()} {
		if f.Version < 1 || len(f.Steps) != f.Version-1 {
			t.Errorf("%s format %d has %d steps", name, f.Version, len(f.Steps))
		}
	}
}
