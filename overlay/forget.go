package overlay

import (
	"errors"
	"fmt"
	"strings"

	feltinstance "github.com/felt-net/felt/internal/instance"
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
	links, err := retryDump(m.nl.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	prefix := ownerPrefix(instance)
	var errs []error
	for _, l := range links {
		if !strings.HasPrefix(l.Attrs().Alias, prefix) {
			continue
		}
		if err := m.nl.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete device %s: %w", l.Attrs().Name, err))
			continue
		}
		m.cfg.Log.Info("removed an overlay device of this host's earlier felt", "device", l.Attrs().Name,
			"alias", l.Attrs().Alias, "instance", instance)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("overlay devices of earlier felt instance %s: %w", instance, err)
	}
	return nil
}
