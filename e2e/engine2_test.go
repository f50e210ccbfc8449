package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit"
)

// TestEngine2Harness's namespace (at most 14 characters: engine2.sh).
const e2hNS = "felt-e2h-h"

// engine2Script is scripts/engine2.sh; FELT_ENGINE2_SCRIPT names another
// copy (to see the harness tests fail with an older one).
func engine2Script(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("FELT_ENGINE2_SCRIPT"); p != "" {
		return p
	}
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(top, "scripts", "engine2.sh")
}

// TestEngine2Harness: scripts/engine2.sh signals only its engine's processes
// and rejoins only its engine's mount namespace. Strangers: a process in the
// engine's network namespace (a test may run its own there) and one in a
// mount namespace whose inode number is written where an older engine2.sh
// kept the engine's (as when the kernel hands the number of an emptied
// namespace to the next one). restart must join the engine's own mount
// namespace, and stop after a crash (kill -9 of dockerd, with a
// --live-restore container running) must end the container, its shim and
// containerd, and leave both strangers running.
func TestEngine2Harness(t *testing.T) {
	testkit.NeedCommands(t, "dockerd", "containerd", "runc", "nsenter", "unshare", "ip", "bash")
	engine2 := engine2Script(t)
	dir := "/tmp/felt-engine-" + e2hNS
	cleanup := func() {
		_, _ = testkit.RunWithin(cmdTimeout, engine2, "stop", e2hNS)
		if _, err := os.Stat(filepath.Join("/run/netns", e2hNS)); err == nil {
			_, _ = testkit.RunWithin(cmdTimeout, "ip", "netns", "del", e2hNS)
		}
	}
	cleanup()
	t.Cleanup(cleanup)
	testkit.MustRun(t, "ip", "netns", "add", e2hNS)
	host, err := testkit.RunWithin(cmdTimeout, engine2, "start", e2hNS, "--live-restore")
	if err != nil {
		t.Fatalf("starting the engine: %v\n%s", err, host)
	}
	e := engine{name: "harness", host: lastLine(host)}
	loadImage(t, e)
	e.must(t, "run", "-d", "--name", "felt-e2h-c", "--network", "none", image, "sleep", "1d")
	ctrPID := pidOf(t, e.must(t, "inspect", "-f", "{{.State.Pid}}", "felt-e2h-c"))

	// The strangers.
	inNet := stranger(t, "sleep", "ip", "netns", "exec", e2hNS, "sleep", "1d")
	inMnt := stranger(t, "sleep", "unshare", "--mount", "sleep", "1d")
	strangerMnt := nsOf(t, inMnt, "mnt")
	// Where engine2.sh kept its namespace's number before, as it wrote it.
	if err := os.WriteFile(filepath.Join(dir, "mntns"), []byte(strangerMnt+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	before := nsOf(t, pidOf(t, readTrim(t, filepath.Join(dir, "engine.pid"))), "mnt")
	if out, err := testkit.RunWithin(cmdTimeout, engine2, "restart", e2hNS, "--live-restore"); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	after := nsOf(t, pidOf(t, readTrim(t, filepath.Join(dir, "engine.pid"))), "mnt")
	if after != before {
		t.Errorf("restarted dockerd is in mount namespace %s, the engine's was %s (the stranger's: %s)", after, before, strangerMnt)
	}
	if got := e.must(t, "inspect", "-f", "{{.State.Pid}}", "felt-e2h-c"); pidOf(t, got) != ctrPID {
		t.Errorf("live-restore: container pid %s after the restart, was %d", got, ctrPID)
	}

	// A crash, then stop.
	engine := enginePIDs(t, e2hNS)
	if len(engine) < 3 {
		t.Fatalf("engine processes (dockerd, containerd, shim) not found: %v", engine)
	}
	dockerd := pidOf(t, readTrim(t, filepath.Join(dir, "engine.pid")))
	if err := syscall.Kill(dockerd, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitExit(t, dockerd)
	if out, err := testkit.RunWithin(cmdTimeout, engine2, "stop", e2hNS); err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	for _, p := range append(engine, ctrPID) {
		if running(p) {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			t.Errorf("process %d (%s) of the engine still runs after stop", p, strings.ReplaceAll(string(cmd), "\x00", " "))
		}
	}
	for name, p := range map[string]int{"in the engine's network namespace": inNet, "in the mount namespace of the recorded number": inMnt} {
		if !running(p) {
			t.Errorf("stop killed a stranger %s (pid %d)", name, p)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s left behind", dir)
	}
}

// loadImage puts the busybox image into engine e (built there, as the e2e
// suite builds it on this machine's engine).
func loadImage(t testing.TB, e engine) {
	t.Helper()
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(top, "scripts", "busybox-image.sh"), image)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+e.host)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s engine: building %s: %v\n%s", e.name, image, err, out)
	}
}

// stranger starts a process the engine has nothing to do with, killed at
// cleanup; it returns when the process runs comm (ip netns exec, unshare
// exec their command).
func stranger(t testing.TB, comm, name string, args ...string) int {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); strings.TrimSpace(string(b)) == comm {
			return cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %v did not start %s", name, args, comm)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// enginePIDs lists the processes whose command line names the exec root of
// engine2.sh's engine in ns: dockerd, containerd, the shims.
func enginePIDs(t testing.TB, ns string) []int {
	t.Helper()
	root := "/run/felt-" + ns
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		var pid int
		if _, err := fmt.Sscan(en.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", en.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == root || strings.HasPrefix(a, root+"/") {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func pidOf(t testing.TB, s string) int {
	t.Helper()
	var p int
	if _, err := fmt.Sscan(strings.TrimSpace(s), &p); err != nil || p <= 0 {
		t.Fatalf("not a pid: %q", s)
	}
	return p
}

func readTrim(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// nsOf is the namespace of kind (mnt, net) pid is in, as mnt:[N].
func nsOf(t testing.TB, pid int, kind string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// running: pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func waitExit(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
