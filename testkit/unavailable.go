package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// OnCI reports whether the tests run on CI (CI=true, as .ci/run sets it).
// There a test that cannot run must fail, not pass silently as a skip.
func OnCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips t because something it needs is missing (root, a
// command, a kernel feature), or fails it under CI=true.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if OnCI() {
		t.Fatalf("%s (CI=true: failing instead of skipping)", msg)
		return
	}
	t.Skip(msg)
}

// UnavailableMain is Unavailable for a TestMain, where a whole package's
// tests cannot run: it says why on stderr and returns the exit code, 0
// (skipped) or, under CI=true, 1.
func UnavailableMain(pkg, reason string) int {
	if OnCI() {
		fmt.Fprintf(os.Stderr, "%s: %s (CI=true: failing instead of skipping)\n", pkg, reason)
		return 1
	}
	fmt.Fprintf(os.Stderr, "%s skipped: %s\n", pkg, reason)
	return 0
}

// NeedCommands calls Unavailable unless every named command is on PATH.
func NeedCommands(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			Unavailable(t, "needs %s: %v", name, err)
		}
	}
}

// NeedRoot calls Unavailable unless the test runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
}
