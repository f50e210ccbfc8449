package driver

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/testkit/netns"
)

// firewallSets lists the entries of the ipsets in host, where the firewall
// keeps which pool is on which bridge (its rules are the same for any
// networks): one "SET ADDRESS/BITS[,IFACE]" line each.
func firewallSets(t *testing.T, host *netns.NS) string {
	t.Helper()
	var sets []netlink.IPSetResult
	if err := host.Do(func() (err error) { sets, err = netlink.IpsetListAll(); return err }); err != nil {
		t.Fatalf("ipset list: %v", err)
	}
	var b strings.Builder
	for _, s := range sets {
		for _, e := range s.Entries {
			fmt.Fprintf(&b, "%s %s/%d", s.SetName, e.IP, e.CIDR)
			if e.IFace != "" {
				b.WriteString("," + e.IFace)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}
