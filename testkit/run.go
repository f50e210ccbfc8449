package testkit

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Run runs a command (args[0] with the rest as its arguments) and returns
// its combined output, trimmed, and its error. For a command whose output
// the test judges, or whose failure is allowed (cleanup).
func Run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// RunWithin is Run killing the command after limit, for commands that could
// hang (a daemon that never answers); the error then says so.
func RunWithin(limit time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timed out after %s)", err, limit)
	}
	return strings.TrimSpace(string(out)), err
}

// MustRun is Run failing t, with the command and its output, on error.
func MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := Run(args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// NetNSExec prefixes a command so that it runs inside the named network
// namespace (`ip netns exec NAME ...`): MustRun(t, NetNSExec(ns, "iptables", "-S")...).
func NetNSExec(name string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", name}, args...)
}
