package overlay

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// Every device the overlay creates (a VTEP, a udp TUN) carries the alias
// felt:<instance>:overlay:<network ID>, as the driver's bridges and veths
// carry felt:<instance>:net:… and felt:<instance>:ep:…. A device whose
// network is not attached here is a leftover, of a crash between creating
// and deleting, or of a reconcile that raced a delete: the Manager removes
// such devices at start and at every resync (removeStray). The instance
// keeps two felts sharing a namespace off each other's devices.

// OwnerAlias is the alias marking a device of the network with this ID as
// belonging to the felt instance.
func OwnerAlias(instance, networkID string) string {
	return ownerPrefix(instance) + networkID
}

func ownerPrefix(instance string) string { return "felt:" + instance + ":overlay:" }

// instanceOf is the instance as configured, or the one the plugin derives
// from the host ID.
func instanceOf(instance, hostID string) string {
	if instance != "" {
		return instance
	}
	if len(hostID) > 8 {
		return hostID[:8]
	}
	return hostID
}

// SetOwner gives link the alias if it lacks it: a device adopted from an
// earlier run, or from a network deleted and created again with the same
// VNI, becomes the current network's.
func SetOwner(nl *netlink.Handle, link netlink.Link, alias string) error {
	if link.Attrs().Alias == alias {
		return nil
	}
	if err := nl.LinkSetAlias(link, alias); err != nil {
		return fmt.Errorf("owner mark %q: %w", alias, err)
	}
	return nil
}

// removeStray deletes this instance's overlay devices whose network is not
// attached (attached says which are). It lists the links before asking,
// so a device made by an Attach under way is never taken for a stray:
// Attach records the network before creating its device.
func (m *Manager) removeStray() error {
	links, err := kernel.RetryDump(m.nl.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	prefix := ownerPrefix(m.instance)
	var errs []error
	for _, l := range links {
		id, ok := strings.CutPrefix(l.Attrs().Alias, prefix)
		if !ok || m.isAttached(id) {
			continue
		}
		m.cfg.Log.Warn("removing stray overlay device: its network is not attached",
			"device", l.Attrs().Name, "network", id)
		if err := m.nl.LinkDel(l); err != nil && !nlerr.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete stray device %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// DeleteDevice deletes the device called name if it is the one marked
// alias, or unmarked (made by a felt that did not mark devices yet), and
// says whether it left one marked otherwise: another network's, made under
// the same name (the same VNI or pool) once this one was detached, while
// its teardown was still to come. Deleting by name alone would cut that
// network off.
func DeleteDevice(nl *netlink.Handle, name, alias string) (others bool, err error) {
	link, err := nl.LinkByName(name)
	switch {
	case nlerr.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, err
	}
	if a := link.Attrs().Alias; a != "" && a != alias {
		return true, nil
	}
	if err := nl.LinkDel(link); err != nil && !nlerr.IsNotFound(err) {
		return false, fmt.Errorf("delete: %w", err)
	}
	return false, nil
}
