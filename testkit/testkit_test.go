package testkit

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// fakeTB records what Unavailable asks of a test instead of ending it.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Skip(args ...any)                  { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestUnavailableSkipsOrFailsOnCI(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			f := &fakeTB{TB: t}
			Unavailable(f, "needs %s", "nft")
			if ci == "true" {
				if f.skipped != "" || !strings.Contains(f.failed, "needs nft") || !strings.Contains(f.failed, "CI=true") {
					t.Fatalf("CI=true: skipped %q, failed %q; want a failure naming nft and CI", f.skipped, f.failed)
				}
				if UnavailableMain("pkg", "no docker") != 1 {
					t.Fatal("UnavailableMain under CI=true: want exit code 1")
				}
				return
			}
			if f.failed != "" || f.skipped != "needs nft" {
				t.Fatalf("skipped %q, failed %q; want a skip saying needs nft", f.skipped, f.failed)
			}
			if UnavailableMain("pkg", "no docker") != 0 {
				t.Fatal("UnavailableMain: want exit code 0 (skipped)")
			}
		})
	}
}

func TestNeedCommands(t *testing.T) {
	t.Setenv("CI", "")
	f := &fakeTB{TB: t}
	NeedCommands(f, "sh", "felt-no-such-command")
	if !strings.Contains(f.skipped, "needs felt-no-such-command") || strings.Contains(f.skipped, "needs sh") {
		t.Fatalf("skipped %q; want the missing command named, and only it", f.skipped)
	}
}

func TestRun(t *testing.T) {
	out, err := Run("sh", "-c", "echo ' out '; echo err >&2")
	if err != nil || out != "out \nerr" {
		t.Fatalf("Run = %q, %v; want combined output, trimmed", out, err)
	}
	out, err = Run("sh", "-c", "echo why; exit 3")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || out != "why" {
		t.Fatalf("Run of a failing command = %q, %v; want its output and exit error", out, err)
	}
	if got := MustRun(t, "echo", "a", "b"); got != "a b" {
		t.Fatalf("MustRun = %q", got)
	}
	start := time.Now()
	_, err = RunWithin(100*time.Millisecond, "sleep", "5")
	if err == nil || !strings.Contains(err.Error(), "timed out after 100ms") || time.Since(start) > 3*time.Second {
		t.Fatalf("RunWithin of a hanging command = %v after %s; want a timeout at once", err, time.Since(start))
	}
	if got := NetNSExec("x", "ip", "link"); strings.Join(got, " ") != "ip netns exec x ip link" {
		t.Fatalf("NetNSExec = %q", got)
	}
}

func TestSetEnv(t *testing.T) {
	got := SetEnv([]string{"A=1", "B=2"}, "B=", "C=3")
	if strings.Join(got, " ") != "A=1 B= C=3" {
		t.Fatalf("SetEnv = %q", got)
	}
}

func TestLogBuffer(t *testing.T) {
	var b LogBuffer
	fmt.Fprint(&b, "hello")
	if !b.Contains("hell") || b.String() != "hello" {
		t.Fatalf("LogBuffer = %q", b.String())
	}
	b.Reset()
	if b.String() != "" {
		t.Fatal("Reset kept text")
	}
}

func TestModuleRoot(t *testing.T) {
	top, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(top + "/testkit/testkit.go"); err != nil {
		t.Fatalf("ModuleRoot = %s: %v", top, err)
	}
}

func TestEchoRequestChecksum(t *testing.T) {
	req := echoRequest(7, 9)
	if Checksum(req) != 0 {
		t.Fatal("an echo request with its checksum must sum to zero")
	}
	reply := append(make([]byte, 20), req...)
	reply[0], reply[20] = 0x45, 0 // IPv4 header of 20 bytes, ICMP type echo reply
	if !isEchoReply(reply, 7, 9) || isEchoReply(reply, 7, 10) || isEchoReply(reply[:24], 7, 9) {
		t.Fatal("isEchoReply does not match on id and seq")
	}
}

// A real ping, in a namespace of the test's own: lo answers, an address
// nobody has does not.
func TestPing(t *testing.T) {
	NeedRoot(t)
	NeedCommands(t, "ip")
	name := fmt.Sprintf("felt-testkit-ping-%d", os.Getpid())
	MustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _, _ = Run("ip", "netns", "del", name) })
	MustRun(t, "ip", "-n", name, "link", "set", "lo", "up")
	if err := PingFrom(name, netip.MustParseAddr("127.0.0.1"), 1, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	ns, err := netns.GetFromName(name)
	Must(t, err)
	defer ns.Close()
	if err := PingTries(ns, netip.MustParseAddr("192.0.2.1"), 2, 200*time.Millisecond); err == nil {
		t.Fatal("ping to an unrouted address answered")
	}
	if err := Ping(ns, netip.MustParseAddr("::1"), time.Second); err == nil || !strings.Contains(err.Error(), "IPv4 only") {
		t.Fatalf("ping to ::1 = %v, want IPv4 only", err)
	}
}
