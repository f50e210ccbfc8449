package probe

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit/netns"
)

// The real pinger between two namespaces over a veth pair of MTU 1400:
// a small echo and one of exactly the MTU are answered, one byte more is
// refused by the kernel (don't-fragment), an absent host times out, and a
// source that is not this host's fails.
func TestICMPPinger(t *testing.T) {
	a, b := netns.New(t, "a"), netns.New(t, "b")
	netns.Veth(t, a, "va", b, "vb")
	for _, l := range []struct {
		ns   *netns.NS
		name string
		cidr string
	}{{a, "va", "10.9.0.1/24"}, {b, "vb", "10.9.0.2/24"}} {
		if err := l.ns.NL.LinkSetMTU(l.ns.Link(t, l.name), 1400); err != nil {
			t.Fatal(err)
		}
		l.ns.AddAddr(t, l.name, l.cidr)
	}
	src, dst := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	p := NewICMP()
	ping := func(src, dst netip.Addr, size int) (rtt time.Duration, err error) {
		derr := a.Do(func() error {
			rtt, err = p.Ping(context.Background(), src, dst, size, 500*time.Millisecond)
			return nil
		})
		if derr != nil {
			t.Fatal(derr)
		}
		return rtt, err
	}
	var err error
	for range 3 { // the first may go while the neighbour is resolved
		if _, err = ping(src, dst, smallSize); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("small echo: %v", err)
	}
	rtt, err := ping(src, dst, 1400-28)
	if err != nil || rtt <= 0 {
		t.Fatalf("echo of the MTU: rtt %v, %v", rtt, err)
	}
	if _, err := ping(src, dst, 1400-27); !errors.Is(err, ErrTooBig) {
		t.Fatalf("echo one byte over the MTU: %v, want %v", err, ErrTooBig)
	}
	if _, err := ping(src, netip.MustParseAddr("10.9.0.3"), smallSize); err == nil || !strings.Contains(err.Error(), "no reply") {
		t.Fatalf("echo to nobody: %v", err)
	}
	if _, err := ping(netip.MustParseAddr("10.9.9.9"), dst, smallSize); err == nil {
		t.Fatal("echo from an address this host does not have: no error")
	}
}
