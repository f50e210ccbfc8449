package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/felt-net/felt/internal/instance"
	"github.com/felt-net/felt/lease"
)

// A lease of this host's public IP held by another host ID, which Acquire
// takes over or removes (see lease.Acquire), is an earlier felt of this host
// whose state directory was lost. What it left in the kernel (bridges,
// veths, overlay devices, firewall rules) carries its own instance mark,
// which the new felt otherwise leaves alone as another felt's; its bridge
// would even keep the connected route of the subnet the new felt took over.
// So the host IDs of such leases are recorded (state.Store.EarlierHosts),
// and Config.ForgetHost removes their objects: in RequestPool before the
// check of the host's networks (the earlier felt's bridge in the pool would
// refuse it) and again after Acquire, for a lease it took over meanwhile,
// so before CreateNetwork makes the new bridge; and after renewals
// (ForgetEarlier). A record goes only once its objects are gone, so a
// failure is retried at the next RequestPool or renewal, also after a
// restart.

// earlierHosts collects the host IDs Acquire reported, until ForgetEarlier
// records them: the takeover callback has no context to write with, and
// runs under the driver's lock or, in a renewal, without it. Host IDs
// already forgotten by this process are not collected again: a felt whose
// state is gone leaves nothing new (a RequestPool would else forget one
// twice, before the checks and at Acquire's takeover).
type earlierHosts struct {
	mu   sync.Mutex
	ids  []string
	done map[string]bool
}

func (e *earlierHosts) note(hostID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.done[hostID] && !slices.Contains(e.ids, hostID) {
		e.ids = append(e.ids, hostID)
	}
}

func (e *earlierHosts) forgotten(hostID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done == nil {
		e.done = map[string]bool{}
	}
	e.done[hostID] = true
}

func (e *earlierHosts) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := e.ids
	e.ids = nil
	return ids
}

// validHostID reports whether id has the form of a felt host ID (lowercase
// hex, 8 to 64 characters): it comes from the shared store, and becomes a
// key of the local state and, through its first 8 characters, a match on
// kernel objects.
func validHostID(id string) bool {
	return len(id) >= instance.Len && len(id) <= 64 && instance.LowerHex(id)
}

// forgetEarlierIn forgets the earlier felts of this host holding leases of
// pool: leases with this host's public IP and another host ID, which
// Acquire is about to take over or remove (expired ones included, which it
// removes without a word). Without the public IP or the leases nothing is
// proven; RequestPool then fails on them itself.
func (d *Driver) forgetEarlierIn(ctx context.Context, pool netip.Prefix) error {
	if d.cfg.ForgetHost == nil {
		return nil
	}
	owner, err := d.cfg.Owner(ctx, pool)
	if err != nil || !owner.PublicIP.IsValid() {
		return nil
	}
	ls, err := d.cfg.Registry.Leases(ctx, pool)
	if err != nil {
		return nil
	}
	for _, l := range ls {
		if l.PublicIP == owner.PublicIP && l.HostID != owner.HostID {
			d.earlier.note(l.HostID) // Acquire logs the takeover
		}
	}
	return d.ForgetEarlier(ctx)
}

// ForgetEarlier removes the kernel objects of the earlier felts of this
// host that takeovers proved (see above). The plugin calls it after lease
// renewals; RequestPool calls it itself.
func (d *Driver) ForgetEarlier(ctx context.Context) error {
	if d.cfg.ForgetHost == nil {
		d.earlier.take()
		return nil
	}
	for _, id := range d.earlier.take() {
		if !validHostID(id) {
			d.cfg.Log.Warn("not removing what the lease's earlier holder left on this host: its host ID is not one felt makes", "hostID", fmt.Sprintf("%.80s", id))
			if len(id) <= 64 {
				d.earlier.forgotten(id) // nothing to do for it, ever (a huge one is not kept)
			}
			continue
		}
		if err := d.cfg.State.PutEarlierHost(ctx, id); err != nil {
			return fmt.Errorf("earlier felt %s of this host: %w", id, err)
		}
	}
	ids, err := d.cfg.State.EarlierHosts(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if !validHostID(id) {
			continue // not written by ForgetEarlier
		}
		d.cfg.Log.Info("removing what an earlier felt of this host (its state directory lost) left in the kernel", "hostID", id)
		if err := d.cfg.ForgetHost(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("removing what the earlier felt of this host (host ID %s, state directory lost) left in the kernel: %w", id, err))
			continue
		}
		if err := d.cfg.State.DeleteEarlierHost(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		d.earlier.forgotten(id)
	}
	return errors.Join(errs...)
}

// logTakeover is Acquire's OnTakeover: it notes the earlier felt and
// warns, since the same public IP may also be a misconfiguration.
func (d *Driver) logTakeover(old lease.Lease, action string) {
	d.earlier.note(old.HostID)
	d.cfg.Log.Warn("lease of this host's public IP held by another host ID "+action+
		": an earlier felt on this host whose state was lost (if another host really uses this address, give each host its own FELT_PUBLIC_IP)",
		"subnet", old.Subnet, "hostID", old.HostID, "publicIP", old.PublicIP)
}
