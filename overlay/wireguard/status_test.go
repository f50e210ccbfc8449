package wireguard_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/felt-net/felt/overlay/wireguard"
)

// A user-space device whose wireguard-go stopped (its TUN deleted) is
// reported as not working until Setup recreates it, not as a device on
// port 0 with its peers: felt status must not look healthy then.
func TestStatusOfStoppedUserspaceDevice(t *testing.T) {
	calls := 0
	ns, b, n, _ := oneHost(t, wireguard.ModeAuto, unix.EOPNOTSUPP, &calls)
	ctx := context.Background()
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := ns.NL.LinkDel(ns.Link(t, dev)); err != nil {
		t.Fatal(err)
	}
	var st wireguard.Status
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, _, err = b.WireGuardStatus(n)
		if err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("status of a stopped device: %+v, %v; want an error saying it stopped", st, err)
	}
	if err := b.Setup(ctx, n); err != nil {
		t.Fatal(err)
	}
	if st, _, err := b.WireGuardStatus(n); err != nil || st.ListenPort != wireguard.DefaultPort {
		t.Fatalf("after setup: %+v, %v", st, err)
	}
}
