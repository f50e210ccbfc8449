package wireguard_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/overlay/wireguard"
)

// privateEnv marks the test binary re-run in a mount namespace of its own.
const privateEnv = "FELT_WIREGUARD_TEST_PRIVATE_RUN"

// TestMain runs the tests (as root) in a mount namespace of their own with
// a tmpfs on wireguard-go's UAPI directory: its sockets are named after the
// device alone, so a felt or another test binary running at the same time
// with a network on the testbed's pool would take over (or remove) this
// test's socket, and the other way round.
func TestMain(m *testing.M) {
	switch {
	case os.Geteuid() != 0:
	case os.Getenv(privateEnv) == "":
		os.Exit(rerunPrivate())
	default:
		if err := os.MkdirAll(wireguard.UAPIDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := unix.Mount("felt-wg-test", wireguard.UAPIDir, "tmpfs", 0, "mode=0755"); err != nil {
			fmt.Fprintf(os.Stderr, "tmpfs on %s: %v\n", wireguard.UAPIDir, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// rerunPrivate runs this test binary again, with the same arguments, in a
// new mount namespace (Go makes its mounts private), and returns its exit
// code. The copy dies with this process.
func rerunPrivate() int {
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), privateEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "wireguard tests in a private mount namespace: %v\n", err)
		return 1
	}
}
