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
	// A relative cache is taken from the working directory, and what dir
	// prints is absolute (it is used from elsewhere; go install's GOBIN
	// must be absolute too).
	abs, err := filepath.Abs(script("engines.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(abs, "dir", "26")
	cmd.Dir = filepath.Dir(cache)
	cmd.Env = append(os.Environ(), "FELT_ENGINES_CACHE="+filepath.Base(cache))
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != bin {
		t.Errorf("engines.sh dir 26 with FELT_ENGINES_CACHE=%s = %q, %v; want %s", filepath.Base(cache), out, err, bin)
	}
}

// TestReleaseChecksRegistry: release.sh refuses, before building anything,
// a REGISTRY Docker would refuse only after the build (upper case in a
// repository path, a port that is no number, empty parts), and lets through
// what Docker accepts: with a stub docker that reports the plugin as
// installed, an accepted one stops at that check.
func TestReleaseChecksRegistry(t *testing.T) {
	env := append(os.Environ(), stubsOnPath(t, t.TempDir(), map[string]string{"docker": "exit 0\n"}), "FELT_VERSION=1.2.3")
	run := func(registry string) (string, int) {
		cmd := exec.Command(script("release.sh"), registry)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	for _, bad := range []string{"", "Localhost:5000/Felt", "localhost:5000/a//b", "/x", "host:port", "host:5000:1",
		"-host", "host-.example", "a b", "myOrg", "host.example/x_-y"} {
		if out, code := run(bad); code != 2 {
			t.Errorf("release.sh %q = exit %d\n%s\nwant 2, refused", bad, code, out)
		}
	}
	for _, good := range []string{"localhost:5000", "127.0.0.1:5000/", "Registry.Example.com/org/felt-builds", "myorg", "ghcr.io/felt-net", "host:5000/a__b.c-d"} {
		if out, code := run(good); code != 1 || !strings.Contains(out, "already installed") {
			t.Errorf("release.sh %q = exit %d\n%s\nwant it accepted (then stopped by the stub's installed plugin)", good, code, out)
		}
	}
}

// TestVersionFromReleaseTags: version.sh takes the version from release
// tags (v1.2.0) only: another tag (a backup, a test marker) on a later
// commit does not become felt's version and the plugin's tag.
func TestVersionFromReleaseTags(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git")
	}
	repo := t.TempDir()
	if err := os.MkdirAll(filepath.Join(repo, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(script("version.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "scripts", "version.sh"), src, 0o755); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", "scripts/version.sh")
	git("commit", "-q", "-m", "one")
	git("tag", "v1.2.0")
	git("commit", "-q", "--allow-empty", "-m", "two")
	git("tag", "backup-before-rebase")
	head := git("rev-parse", "--short", "HEAD")

	cmd := exec.Command(filepath.Join(repo, "scripts", "version.sh"))
	cmd.Env = append(os.Environ(), "FELT_VERSION=")
	out, err := cmd.CombinedOutput()
	if want := "1.2.0-1-g" + head; err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("version.sh = %q, %v; want %s (the release tag, not backup-before-rebase)", out, err, want)
	}
}

// TestEnginesAptUsesMachineProxy: engines.sh fetches Docker 26 with a
// private apt configuration, which reads none of the machine's files; the
// machine's apt proxies go with it, or a machine that reaches Debian only
// through one cannot build the engine (before, they were dropped). A stub
// apt-get records what it is given.
func TestEnginesAptUsesMachineProxy(t *testing.T) {
	for _, b := range []string{"apt-config", "flock"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("needs %s", b)
		}
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "apt.conf")
	if err := os.WriteFile(conf, []byte(`Acquire::http::Proxy "http://proxy.example:3128";
Acquire::http::Proxy::deb.debian.org "http://other.example:8080";
`), 0o644); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(dir, "apt-get.args")
	path := stubsOnPath(t, filepath.Join(dir, "bin"), map[string]string{"apt-get": "printf '%s\\n' \"$@\" >>\"$RECORD\"\nexit 1\n"})
	cmd := exec.Command(script("engines.sh"), "build", "26")
	cmd.Env = append(os.Environ(), path, "RECORD="+record,
		"APT_CONFIG="+conf, "FELT_ENGINES_CACHE="+filepath.Join(dir, "cache"))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("engines.sh build 26 with a failing apt-get succeeded:\n%s", out)
	}
	args, err := os.ReadFile(record)
	if err != nil {
		t.Fatalf("apt-get was not run: %v", err)
	}
	for _, want := range []string{"Acquire::http::Proxy=http://proxy.example:3128\n", "Acquire::http::Proxy::deb.debian.org=http://other.example:8080\n", "update\n"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("apt-get's arguments lack %q:\n%s", want, args)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "cache", ".build-*")); len(left) != 0 {
		t.Errorf("the failed build left %v", left)
	}
}

// TestRegistryBuildSaysWhenBinaryFails: tools/registry/build.sh runs the
// registry it built to check its version; a binary that fails there ends
// the build with a message saying so (before, `set -o pipefail` ended the
// script silently, with status 1 and no word why). A stub go "builds" it.
func TestRegistryBuildSaysWhenBinaryFails(t *testing.T) {
	dir := t.TempDir()
	path := stubsOnPath(t, filepath.Join(dir, "bin"), map[string]string{"go": goInstalling(`#!/bin/sh\nexit 3\n`)})
	out := filepath.Join(dir, "out", "registry")
	cmd := exec.Command(filepath.Join("..", "..", "tools", "registry", "build.sh"))
	cmd.Env = append(os.Environ(), path, "FELT_REGISTRY_BIN="+out)
	got, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(got), "built binary reports ''") {
		t.Fatalf("build.sh with a failing binary = %v\n%s\nwant it to fail saying what the binary reported", err, got)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("the failing binary was installed at %s (%v)", out, err)
	}
}

// TestRegistryMakeTargetIsTheBinary: `make bin/registry` builds the file it
// names, whatever FELT_REGISTRY_BIN says in the environment (before, the
// build went there and make's touch left an empty bin/registry, which the
// e2e tests then found and could not run). A stub go "builds" a registry
// that reports the pinned version.
func TestRegistryMakeTargetIsTheBinary(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("needs make")
	}
	dir := t.TempDir()
	path := stubsOnPath(t, filepath.Join(dir, "stub"), map[string]string{
		"go": goInstalling(`#!/bin/sh\necho "$0 github.com/distribution/distribution/v3 v3.1.2"\n`),
	})
	mk, err := filepath.Abs(filepath.Join("..", "..", "tools", "registry", "registry.mk"))
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(dir, "elsewhere", "registry")
	cmd := exec.Command("make", "-s", "-C", dir, "-f", mk, "bin/registry")
	cmd.Env = append(os.Environ(), path, "FELT_REGISTRY_BIN="+elsewhere)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make bin/registry: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(dir, "bin", "registry"), "--version").Output()
	if err != nil || !strings.Contains(string(out), "distribution/v3 v3.1.2") {
		t.Fatalf("bin/registry --version = %q, %v; want the built registry there", out, err)
	}
}

// stubsOnPath writes each script (name: the lines after #!/bin/sh) as an
// executable into dir, and returns the PATH setting that finds them first.
func stubsOnPath(t *testing.T, dir string, scripts map[string]string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return "PATH=" + dir + ":" + os.Getenv("PATH")
}

// goInstalling is a stub go whose `go install` "builds" a registry from the
// printf format registry (and whose `go version` answers).
func goInstalling(registry string) string {
	return `case $1 in
version) echo "go version stub" ;;
install) mkdir -p "$GOBIN" && printf '` + registry + `' >"$GOBIN/registry" && chmod +x "$GOBIN/registry" ;;
*) exit 1 ;;
esac
`
}
