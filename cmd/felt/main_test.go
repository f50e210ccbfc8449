package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersion: the version set at build time is what --version prints, and
// scripts/version.sh gives what make and the scripts pass (FELT_VERSION
// wins; without it a git version or "dev", always a valid Docker tag).
func TestVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds felt")
	}
	bin := filepath.Join(t.TempDir(), "felt")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version=1.2.3-test", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, arg := range []string{"--version", "-version", "version"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil || string(out) != "felt 1.2.3-test\n" {
			t.Errorf("felt %s = %q, %v; want \"felt 1.2.3-test\\n\"", arg, out, err)
		}
	}
	if out, err := exec.Command(bin, "bogus").CombinedOutput(); err == nil || !strings.Contains(string(out), "usage: felt [serve | status [--json] [--socket PATH] | leases [--json] | --version]") {
		t.Errorf("felt bogus = %q, %v; want the usage and an error", out, err)
	}

	script := filepath.Join("..", "..", "scripts", "version.sh")
	cmd := exec.Command(script)
	cmd.Env = append(cmd.Environ(), "FELT_VERSION=2.0.0-rc.1")
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "2.0.0-rc.1\n" {
		t.Errorf("FELT_VERSION=2.0.0-rc.1 version.sh = %q, %v", out, err)
	}
	cmd = exec.Command(script)
	cmd.Env = append(cmd.Environ(), "FELT_VERSION=")
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err != nil || v == "" || strings.HasPrefix(v, "v") || strings.ContainsAny(v, " +/") {
		t.Errorf("version.sh = %q, %v; want a git version or dev, without a leading v, valid as a Docker tag", out, err)
	}
	for _, bad := range []string{"a b", "-x", "1.0+build"} {
		cmd = exec.Command(script)
		cmd.Env = append(cmd.Environ(), "FELT_VERSION="+bad)
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "is not a valid version") {
			t.Errorf("FELT_VERSION=%q version.sh = %q, %v; want it refused", bad, out, err)
		}
	}
}
