package firewall

import (
	"fmt"

	"github.com/felt-net/felt/internal/instance"
	"github.com/felt-net/felt/internal/nsutil"
)

// ForgetInstance deletes the rules of inst, an earlier felt of this
// host: one whose lease of this host's public IP was taken over (see
// driver.ForgetInstance for why that is the proof). Its rules would
// otherwise stay for good, since every felt deletes only rules tagged with
// its own instance. A chain left without rules goes with its jump, as at
// Remove; this instance's rules and those of any other stay. Idempotent.
func (f *Firewall) ForgetInstance(inst string) error {
	if err := instance.Check(inst); err != nil {
		return fmt.Errorf("firewall: %w", err)
	}
	if inst == f.instance {
		return fmt.Errorf("firewall: felt instance %s is this felt's own: not forgetting it", inst)
	}
	// Under f's lock: Keep (or a Sync) does not run meanwhile, so a chain
	// found empty here is not one f is filling.
	f.mu.Lock()
	defer f.mu.Unlock()
	old := &Firewall{instance: inst, ipt: f.ipt, restore: f.restore, ns: f.ns, log: f.log}
	var changes []string
	err := nsutil.Do(f.ns, func() error { return old.removeAll(&changes) })
	if len(changes) > 0 {
		f.log.Info("removed the firewall rules of this host's earlier felt", "instance", inst, "changes", changes)
	}
	if err != nil {
		return fmt.Errorf("firewall: rules of earlier felt instance %s: %w", inst, err)
	}
	return nil
}
