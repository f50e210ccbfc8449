package bench

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// scope is the testing.TB one part of the benchmark runs under. The harness
// calls t.Fatal on any error; under a scope that ends the part, not the
// benchmark: the part is reported as unavailable with the reason, and the
// run carries on, so one broken backend still leaves a full table. Its
// cleanups run when the part ends, so each part tears down its namespaces,
// processes and links before the next one measures.
type scope struct {
	testing.TB // the benchmark's; only for what is not overridden here

	name     string
	mu       sync.Mutex
	cleanups []func()
	closed   bool // cleanups have run: later ones run at once
	failures []string
	skipped  bool

	// cleaning is held while cleanups run, so that an interrupt arriving
	// while the part's own goroutine tears down waits for it to finish
	// instead of exiting under it.
	cleaning sync.Mutex
}

// runScope runs fn under a fresh scope in its own goroutine (Fatal ends it
// with runtime.Goexit, as testing does), then runs the scope's cleanups. It
// returns nil, or why the part did not complete.
func runScope(tb testing.TB, name string, fn func(s *scope)) error {
	if interrupted.Load() {
		return fmt.Errorf("%s: interrupted", name)
	}
	s := &scope{TB: tb, name: name}
	active.add(s)
	defer active.remove(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				s.record(fmt.Sprintf("panic: %v", r))
			}
		}()
		fn(s)
	}()
	<-done
	s.runCleanups()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) > 0 {
		return fmt.Errorf("%s: %s", name, strings.Join(s.failures, "; "))
	}
	if s.skipped {
		return fmt.Errorf("%s: skipped", name)
	}
	return nil
}

func (s *scope) record(msg string) {
	s.mu.Lock()
	s.failures = append(s.failures, strings.TrimSpace(msg))
	s.mu.Unlock()
	logf("[%s] error: %s", s.name, firstLines(msg, 20))
}

// runCleanups runs the cleanups last-in first-out, each protected from the
// others' panics and Goexits. A second call (the interrupt handler racing
// the part's own end) waits for the first and finds nothing left to do.
func (s *scope) runCleanups() {
	s.cleaning.Lock()
	defer s.cleaning.Unlock()
	s.mu.Lock()
	fns := s.cleanups
	s.cleanups, s.closed = nil, true
	s.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		runIsolated(fns[i])
	}
}

// runIsolated runs f in its own goroutine: a cleanup calling t.Fatal
// (runtime.Goexit) must end only itself, not the loop running the others.
func runIsolated(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = recover() }()
		f()
	}()
	<-done
}

// Cleanup registers f; on a scope already torn down (the part's goroutine
// still setting up after an interrupt) f runs at once, so nothing it
// undoes is left behind.
func (s *scope) Cleanup(f func()) {
	s.mu.Lock()
	if !s.closed {
		s.cleanups = append(s.cleanups, f)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	runIsolated(f)
}

func (s *scope) Helper()                        {}
func (s *scope) Error(args ...any)              { s.record(fmt.Sprintln(args...)) }
func (s *scope) Errorf(format string, a ...any) { s.record(fmt.Sprintf(format, a...)) }
func (s *scope) Fail()                          { s.record("failed") }
func (s *scope) FailNow()                       { s.record("failed"); runtime.Goexit() }
func (s *scope) Fatal(args ...any)              { s.record(fmt.Sprintln(args...)); runtime.Goexit() }
func (s *scope) Fatalf(format string, a ...any) {
	s.record(fmt.Sprintf(format, a...))
	runtime.Goexit()
}
func (s *scope) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.failures) > 0
}
func (s *scope) Skip(args ...any) { s.record("skipped: " + fmt.Sprintln(args...)); runtime.Goexit() }
func (s *scope) Skipf(format string, a ...any) {
	s.record("skipped: " + fmt.Sprintf(format, a...))
	runtime.Goexit()
}
func (s *scope) SkipNow() { s.skip() }
func (s *scope) skip() {
	s.mu.Lock()
	s.skipped = true
	s.mu.Unlock()
	runtime.Goexit()
}
func (s *scope) Skipped() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.skipped }
func (s *scope) Name() string  { return s.name }

// Log output goes straight to stderr: testing.B would hold it until the
// benchmark ends, and progress is what a 10-minute run should show.
func (s *scope) Log(args ...any) { logf("[%s] %s", s.name, strings.TrimSpace(fmt.Sprintln(args...))) }
func (s *scope) Logf(format string, args ...any) {
	logf("[%s] "+format, append([]any{s.name}, args...)...)
}

// TempDir is per scope, so it goes with the scope's other cleanups rather
// than at the end of the whole benchmark.
func (s *scope) TempDir() string {
	dir, err := os.MkdirTemp("", "felt-bench-")
	if err != nil {
		s.Fatalf("temp dir: %v", err)
	}
	s.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, "\n")
}

// interrupted is set on SIGINT/SIGTERM: no new part starts.
var interrupted atomic.Bool

// active holds the running scopes, so that an interrupt (Ctrl-C during
// `make bench`) still removes namespaces and kills felt and iperf3, which
// run in their own process groups and would not get the terminal's signal.
var active = &scopes{}

type scopes struct {
	mu   sync.Mutex
	list []*scope
	once sync.Once
}

func (a *scopes) add(s *scope) {
	a.once.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			sig := <-ch
			interrupted.Store(true)
			logf("%v: cleaning up before exiting", sig)
			a.mu.Lock()
			list := append([]*scope(nil), a.list...)
			a.mu.Unlock()
			for i := len(list) - 1; i >= 0; i-- {
				list[i].runCleanups()
			}
			os.Exit(130)
		}()
	})
	a.mu.Lock()
	a.list = append(a.list, s)
	a.mu.Unlock()
}

func (a *scopes) remove(s *scope) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, x := range a.list {
		if x == s {
			a.list = append(a.list[:i], a.list[i+1:]...)
			return
		}
	}
}
