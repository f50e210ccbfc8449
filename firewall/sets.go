package firewall

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The ipsets are written over netlink (vishvananda/netlink), in the
// namespace the caller switched to (nsutil.Do): no ipset command is needed,
// and none is on most hosts.

// tempSuffix names the fresh copy of a set that apply swaps in.
const tempSuffix = "-t"

// typeOf is the ipset type of each of an instance's sets.
func (s sets) typeOf(name string) string {
	if name == s.pools {
		return "hash:net"
	}
	return "hash:net,iface"
}

func (e entry) String() string {
	if e.iface == "" {
		return fmt.Sprintf("%s %s", e.set, e.net)
	}
	return fmt.Sprintf("%s %s,%s", e.set, e.net, e.iface)
}

func (e entry) netlink() *netlink.IPSetEntry {
	return &netlink.IPSetEntry{IP: net.IP(e.net.Addr().AsSlice()), CIDR: uint8(e.net.Bits()), IFace: e.iface}
}

func isExist(err error) bool {
	var e nl.IPSetError
	return errors.Is(err, syscall.EEXIST) || errors.As(err, &e) && int(e) == nl.IPSET_ERR_EXIST
}

func isNoSet(err error) bool { return errors.Is(err, syscall.ENOENT) }

// isBusy tells a set that rules still refer to.
func isBusy(err error) bool {
	var e nl.IPSetError
	return errors.Is(err, syscall.EBUSY) || errors.As(err, &e) && int(e) == nl.IPSET_ERR_BUSY
}

// createSet makes the set unless a set of its name and type exists (an
// existing one is kept with its entries; one of another type is an error).
func createSet(name, typ string) error {
	if err := netlink.IpsetCreate(name, typ, netlink.IpsetCreateOptions{Replace: true}); err != nil {
		return fmt.Errorf("ipset create %s %s: %w", name, typ, err)
	}
	return nil
}

// addEntry adds e; it reports false when e was there already.
func addEntry(e entry) (bool, error) {
	err := netlink.IpsetAdd(e.set, e.netlink())
	if isExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ipset add %s: %w", e, err)
	}
	return true, nil
}

// delEntry deletes e, failing when it is not there (delta's sign that
// someone else changed the set: the full apply follows).
func delEntry(e entry) error {
	if err := netlink.IpsetDel(e.set, e.netlink()); err != nil {
		return fmt.Errorf("ipset del %s: %w", e, err)
	}
	return nil
}

// setExists tells whether a set called name exists. The kernel destroys a
// missing set without an error, and listing one makes the netlink library
// log on the standard logger; a test of an empty entry fails with ENOENT
// for a missing set only.
func setExists(name string) bool {
	_, err := netlink.IpsetTest(name, &netlink.IPSetEntry{})
	return !isNoSet(err)
}

func destroySet(name string) error {
	if err := netlink.IpsetDestroy(name); err != nil && !isNoSet(err) {
		return fmt.Errorf("ipset destroy %s: %w", name, err)
	}
	return nil
}

// fillSets makes this instance's sets hold exactly want (entries' order:
// pools first, see delta), and allNets hold its nets set, without a moment
// in which a network is let through but not isolated: first every wanted
// entry is added to the live sets (pools, which only drops use, before
// nets, which lets through), then each set is replaced by a fresh copy
// holding only the wanted entries, nets first (an entry of an earlier felt
// that lost a network while down, or of someone else, goes). ipset swap exchanges the contents of two
// sets in one step; rules refer to the set, not the contents. Entries that
// were missing are logged as changes; stale ones go unlogged (knowing them
// would mean listing the sets, which the netlink library only does with
// noise on the standard logger).
func (f *Firewall) fillSets(want []entry, changes *[]string) error {
	s := setsOf(f.instance)
	for _, name := range s.all() {
		if err := createSet(name, s.typeOf(name)); err != nil {
			return err
		}
	}
	if err := createSet(allNets, "list:set"); err != nil {
		return err
	}
	for _, e := range want {
		added, err := addEntry(e)
		if err != nil {
			return err
		}
		if added {
			*changes = append(*changes, "added ipset entry "+e.String())
		}
	}
	for _, name := range []string{s.nets, s.pools} {
		tmp := name + tempSuffix
		if err := destroySet(tmp); err != nil { // left by a felt killed here
			return err
		}
		if err := netlink.IpsetCreate(tmp, s.typeOf(name), netlink.IpsetCreateOptions{}); err != nil {
			return fmt.Errorf("ipset create %s: %w", tmp, err)
		}
		for _, e := range want {
			if e.set != name {
				continue
			}
			e.set = tmp
			if _, err := addEntry(e); err != nil {
				return errors.Join(err, destroySet(tmp))
			}
		}
		if err := netlink.IpsetSwap(name, tmp); err != nil {
			return errors.Join(fmt.Errorf("ipset swap %s %s: %w", name, tmp, err), destroySet(tmp))
		}
		if err := destroySet(tmp); err != nil {
			return err
		}
	}
	// Into the list last: its rules only drop what is not in it.
	added, err := listMember(nl.IPSET_CMD_ADD, allNets, s.nets)
	if err != nil {
		return err
	}
	if added {
		*changes = append(*changes, "added ipset entry "+allNets+" "+s.nets)
	}
	return nil
}

// listMember adds member to or deletes it from the list:set list (which the
// netlink library's entries cannot name), reporting whether it changed the
// list: adding a member that is there, or deleting one that is not, does
// nothing. With IPSET_CMD_TEST, it reports whether member is in list.
func listMember(cmd int, list, member string) (bool, error) {
	req := nl.NewNetlinkRequest(cmd|(unix.NFNL_SUBSYS_IPSET<<8), nl.GetIpsetFlags(cmd)|unix.NLM_F_EXCL)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: uint8(unix.AF_NETLINK), Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)))
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(list)))
	data := nl.NewRtAttr(nl.IPSET_ATTR_DATA|int(nl.NLA_F_NESTED), nil)
	data.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_NAME, nl.ZeroTerminated(member)))
	req.AddData(data)
	_, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	var errno syscall.Errno
	if errors.As(err, &errno) && int(errno) >= nl.IPSET_ERR_PRIVATE {
		err = nl.IPSetError(uintptr(errno))
	}
	switch {
	case isExist(err):
		return false, nil
	case err != nil:
		verb := map[int]string{nl.IPSET_CMD_ADD: "add", nl.IPSET_CMD_DEL: "del", nl.IPSET_CMD_TEST: "test"}[cmd]
		return false, fmt.Errorf("ipset %s %s %s: %w", verb, list, member, err)
	}
	return true, nil
}

// destroySets takes this instance's nets set out of allNets and deletes
// its sets (once no rule refers to them: the kernel refuses otherwise),
// and allNets once no rule of any instance refers to it.
func (f *Firewall) destroySets(changes *[]string) error {
	s := setsOf(f.instance)
	if setExists(allNets) && setExists(s.nets) {
		removed, err := listMember(nl.IPSET_CMD_DEL, allNets, s.nets)
		if err != nil {
			return err
		}
		if removed {
			*changes = append(*changes, "deleted ipset entry "+allNets+" "+s.nets)
		}
	}
	var errs []error
	for _, name := range s.all() {
		for _, n := range []string{name + tempSuffix, name} {
			if !setExists(n) {
				continue
			}
			if err := destroySet(n); err != nil {
				errs = append(errs, err)
				continue
			}
			*changes = append(*changes, "deleted ipset "+n)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Another felt's rules may still refer to the list: then it stays.
	if setExists(allNets) {
		switch err := netlink.IpsetDestroy(allNets); {
		case isBusy(err):
		case err != nil:
			return fmt.Errorf("ipset destroy %s: %w", allNets, err)
		default:
			*changes = append(*changes, "deleted ipset "+allNets)
		}
	}
	return nil
}
