package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Checks of the release and engine scripts that need neither Docker nor the
// network: what they refuse, and what they clean up.

func script(name string) string { return filepath.Join("..", "..", "scripts", name) }

// TestEnginesBuildRemovesStaleBuildDirs: a build killed without its EXIT
// trap running (SIGKILL, a lost machine) leaves its temporary directory in
// the cache, hundreds of MB; the next build, holding the lock, removes it
// (before, every such run left one more).
func TestEnginesBuildRemovesStaleBuildDirs(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("needs flock")
	}
	cache := t.TempDir()
	out, err := exec.Command(script("engines.sh"), "versions", "26").Output()
	if err != nil {
		t.Fatalf("engines.sh versions 26: %v", err)
	}
	// A cached engine 26 as the script would build it now: nothing to build.
	bin := filepath.Join(cache, "docker-26", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "dockerd"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "docker-26", "versions"), append(out, "# a.deb\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(cache, ".build-29.abc123", "engine", "bin")
	if err := os.MkdirAll(stale, 0o555); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script("engines.sh"), "build", "26")
	cmd.Env = append(os.Environ(), "FELT_ENGINES_CACHE="+cache)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "up to date") {
		t.Fatalf("engines.sh build 26 = %v\n%s\nwant it up to date", err, out)
	}
	if _, err := os.Stat(filepath.Join(cache, ".build-29.abc123")); !os.IsNotExist(err) {
		t.Errorf("the stale build directory is still there (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(bin, "dockerd")); err != nil {
		t.Errorf("the cached engine went: %v", err)
	}
	cmd = exec.Command(script("engines.sh"), "dir", "26")
	cmd.Env = append(os.Environ(), "FELT_ENGINES_CACHE="+cache)
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != bin {
		t.Errorf("engines.sh dir 26 = %q, %v; want %s", out, err, bin)
	}
}
