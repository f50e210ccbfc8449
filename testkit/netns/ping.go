package netns

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/felt-net/felt/testkit"
)

// Ping sends one ICMP echo request from inside the namespace to dst and
// waits up to timeout for the reply (testkit.Ping).
func (ns *NS) Ping(dst netip.Addr, timeout time.Duration) error {
	if err := testkit.Ping(ns.Handle, dst, timeout); err != nil {
		return fmt.Errorf("netns %s: %w", ns.Name, err)
	}
	return nil
}

// PingTries pings up to tries times, each waiting up to wait, and returns
// nil at the first reply (testkit.PingTries).
func (ns *NS) PingTries(dst netip.Addr, tries int, wait time.Duration) error {
	if err := testkit.PingTries(ns.Handle, dst, tries, wait); err != nil {
		return fmt.Errorf("netns %s: %w", ns.Name, err)
	}
	return nil
}
