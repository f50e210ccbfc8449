package driver

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/state"
	"github.com/felt-net/felt/testkit"
)

// lockedBuffer is a log sink safe for the driver's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// One stored network whose bridge name the firewall refuses (old or
// tampered state: felt never names a bridge outside [A-Za-z0-9._-]) must
// not cost every other network its rules: Sync refuses its whole list for
// one bad entry, so each CreateNetwork (and each resync) failed and no
// network got isolation rules. The bad one is skipped and logged.
func TestHostileStoredBridgeNameSkipped(t *testing.T) {
	e := newEnv(t)
	fw, err := firewall.New(e.host.Handle, "testinst", "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		testkit.Unavailable(t, "iptables: %v", err) // fails with CI=true
	}
	e.d.cfg.Firewall = fw
	var logs lockedBuffer
	e.d.cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	const hostile = "x -j ACCEPT #"
	bad := state.Network{ID: id("ee", 'e'), Pool: netip.MustParsePrefix("10.62.0.0/16"),
		Subnet: netip.MustParsePrefix("10.62.1.0/24"), Gateway: netip.MustParseAddr("10.62.1.1"),
		Bridge: hostile, Backend: "vxlan", MTU: 1450}
	must(t, e.d.cfg.State.PutNetwork(ctx, bad))

	a := e.network(t, id("aa", 'a'), "10.60.0.0/16") // failed here before: the whole Sync was refused
	r, sets := e.host.MustRun(t, "iptables-save"), firewallSets(t, e.host)
	if !strings.Contains(sets, "10.60.0.0/16,"+BridgeName(a.ID)) {
		t.Fatalf("%s not in the firewall's sets beside a stored network with a hostile bridge name:\n%s", BridgeName(a.ID), sets)
	}
	if strings.Contains(r+sets, "10.62.0.0/16") || strings.Contains(r, "-j ACCEPT #") {
		t.Fatalf("rules or set entries written for the hostile network:\n%s\n%s", r, sets)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, short(bad.ID, 12)) {
		t.Fatalf("the skipped network was not logged as an error (network %s):\n%s", short(bad.ID, 12), l)
	}
}
