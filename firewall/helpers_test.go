package firewall_test

import (
	"log/slog"
	"net/netip"
	"os"
	"testing"

	"github.com/felt-net/felt/firewall"
	"github.com/felt-net/felt/testkit/netns"
)

var feltDNS = netip.MustParseAddr("169.254.53.53")

var (
	redNet  = firewall.Network{Bridge: "felt-red", Pool: redPool}
	blueNet = firewall.Network{Bridge: "felt-blue", Pool: bluePool}
)

func newFirewall(t testing.TB, ns *netns.NS, path, instance string) *firewall.Firewall {
	t.Helper()
	fw, err := firewall.New(ns.Handle, instance, path, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	fw.SetDNS(feltDNS) // as felt runs by default (FELT_DNS)
	return fw
}

func mustSync(t testing.TB, fw *firewall.Firewall, nets ...firewall.Network) {
	t.Helper()
	if err := fw.Sync(nets); err != nil {
		t.Fatal(err)
	}
}
