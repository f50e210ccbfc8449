package overlay

import (
	"errors"
	"fmt"
	"strings"

	feltinstance "github.com/felt-net/felt/internal/instance"
	"github.com/felt-net/felt/internal/nlerr"
	"github.com/felt-net/felt/overlay/internal/kernel"
)

// ForgetInstance deletes the overlay devices marked with instance (VTEPs,
// udp TUNs: OwnerAlias), which must be an earlier felt of this host: one
// whose lease of this host's public IP was taken over (see
// driver.ForgetInstance for why that is the proof). The entries and routes
// through a device go with it. Devices of this Manager's instance and of any
// other stay. Idempotent; it carries on past errors and returns them joined.
func (m *Manager) ForgetInstance(instance string) error {
	if err := feltinstance.Check(instance); err != nil {
		return err
	}
	if instance == m.instance {
		return fmt.Errorf("felt instance %s is this felt's own: not forgetting it", instance)
	}
	links, err := kernel.RetryDump(m.nl.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	prefix := ownerPrefix(instance)
	var errs []error
	for _, l := range links {
		if !strings.HasPrefix(l.Attrs().Alias, prefix) {
			continue
		}
		name := l.Attrs().Name
		deleted, err := m.deleteIfStillMarked(name, l.Attrs().Index, prefix)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete device %s: %w", name, err))
			continue
		}
		if deleted {
			m.cfg.Log.Info("removed an overlay device of this host's earlier felt", "device", name,
				"alias", l.Attrs().Alias, "instance", instance)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("overlay devices of earlier felt instance %s: %w", instance, err)
	}
	return nil
}

// deleteIfStillMarked deletes the device called name (with that index) if
// it still carries a mark starting with prefix. A network of this felt using
// that name (the same VNI or pool: its record in the shared store outlived
// the earlier felt's state) adopts the device in its Setup, under its lock:
// the device is looked at again under that lock, so one adopted meanwhile
// stays. Without such a network, the Manager's lock keeps an Attach from
// registering one until the device is gone, and its Setup then makes a new
// one.
func (m *Manager) deleteIfStillMarked(name string, index int, prefix string) (bool, error) {
	m.mu.Lock()
	var user *attached
	for _, a := range m.networks {
		if a.device == name {
			user = a
			break
		}
	}
	if user == nil {
		defer m.mu.Unlock()
	} else {
		m.mu.Unlock()
		user.mu.Lock()
		defer user.mu.Unlock()
	}
	l, err := m.nl.LinkByName(name)
	if nlerr.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if l.Attrs().Index != index || !strings.HasPrefix(l.Attrs().Alias, prefix) {
		return false, nil // adopted, or another device by now
	}
	if err := m.nl.LinkDel(l); err != nil && !nlerr.IsNotFound(err) {
		return false, err
	}
	return true, nil
}
