package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/felt-net/felt/internal/instance"
)

// An earlier incarnation of this felt (the same host, before its state
// directory was wiped and it got a new host ID) leaves its bridges and veths
// in the kernel, marked with its own instance. felt normally leaves links of
// other instances alone: a second felt sharing the namespace marks its links
// with its own instance. Only proof that an instance was this host's earlier
// felt lets felt delete them: the IPAM taking over a lease of this host's
// public IP held by another host ID (lease.Acquire). The plugin then calls
// ForgetInstance before the new network's bridge exists, since an old
// bridge holding the same subnet would keep the connected route and cut the
// new network off.

// ForgetInstance deletes the bridges and veths marked with instance, an
// earlier felt of this host: veths first (each takes its container end
// along, wherever it is: a container of the earlier felt, stale in Docker
// too, is cut off, as it would be by its bridge going), then bridges. Links
// of this instance and of any other stay. Idempotent: a second call finds
// nothing. It carries on past errors and returns them joined.
//
// It takes no driver lock: the IPAM calls it under the IPAM's lock, and
// the drivers' locks are never nested. It needs none, since the driver
// never adopts a link marked with another instance (claimName and
// checkBridgeName refuse them), so a link it finds marked with inst stays
// that instance's until it is deleted.
func (d *Driver) ForgetInstance(ctx context.Context, inst string) error {
	// inst comes from the shared store: only an exact instance may reach a
	// match on aliases (internal/instance).
	if err := instance.Check(inst); err != nil {
		return err
	}
	if inst == d.cfg.Instance {
		return fmt.Errorf("felt instance %s is this felt's own: not forgetting it", inst)
	}
	links, err := d.nl.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	netPrefix, epPrefix := "felt:"+inst+":net:", "felt:"+inst+":ep:"
	var veths, bridges []string
	for _, l := range links {
		switch a := l.Attrs().Alias; {
		case strings.HasPrefix(a, epPrefix):
			veths = append(veths, l.Attrs().Name)
		case strings.HasPrefix(a, netPrefix):
			bridges = append(bridges, l.Attrs().Name)
		}
	}
	var errs []error
	for _, group := range []struct {
		kind, prefix string
		names        []string
	}{{"veth", epPrefix, veths}, {"bridge", netPrefix, bridges}} {
		for _, name := range group.names {
			// Looked up again by name: a veth's deletion took its peer
			// along, and the alias is checked once more right before.
			l, err := d.linkByName(name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if l == nil || !strings.HasPrefix(l.Attrs().Alias, group.prefix) {
				continue
			}
			if err := d.deleteLink(l); err != nil {
				errs = append(errs, err)
				continue
			}
			d.cfg.Log.Info("removed a "+group.kind+" of this host's earlier felt", "link", name,
				"alias", l.Attrs().Alias, "instance", inst)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("links of earlier felt instance %s: %w", inst, err)
	}
	return nil
}
