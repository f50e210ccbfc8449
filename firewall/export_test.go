package firewall

import "github.com/vishvananda/netlink/nl"

// InList reports whether the set member is in the list:set list (the
// netlink library lists no list:set member), for the tests' dumps.
func InList(list, member string) (bool, error) { return listMember(nl.IPSET_CMD_TEST, list, member) }
