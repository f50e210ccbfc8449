package plugin

import (
	"context"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/overlay/wireguard"
)

// renewLoop renews this host's leases well before they expire: every third
// of the TTL (at most hourly, like flannel's "1 h before"), a minute (or
// less, for short test TTLs) after a failure, and at once when the host's
// public IP changed (peers learn the new address without a restart), its
// WireGuard public key changed (the key file was replaced: peers learn
// the new key; noticed by whatever read the file first, a reconcile
// included, which wakes the loop), or a lease vanished from the store
// (peers would drop their routes to it). A change is logged, and the
// overlay kicked, once: while renewals fail, each check renews again
// without announcing it again.
func (a *App) renewLoop(ctx context.Context) {
	every := min(a.Settings.LeaseTTL/3, time.Hour)
	retry := min(time.Minute, a.Settings.LeaseTTL/10)
	check := min(every, a.Settings.Resync)
	var st renewState
	var due time.Time // zero: renew now
	for {
		keyChanged := a.wireGuardKeyChanged() // before the key is read: a change after it wakes the loop
		ip, _ := a.Underlay.Addr()
		now := published{ip: ip, key: a.wireGuardKey()}
		was := st.seen
		ipMoved, keyMoved, differs := st.look(now)
		if keyMoved {
			a.Log.Info("WireGuard public key changed (key file replaced); updating leases", "from", was.key, "to", now.key)
			a.Overlay.Kick() // the devices take the new private key
		}
		if ipMoved {
			a.Log.Info("public IP changed; updating leases", "from", was.ip, "to", now.ip)
			if c, ok := a.Shared.(kv.ConnectionResetter); ok {
				// Connections from the old address are dead: abort what
				// waits on them (the overlay's watch, say), which then
				// retries on fresh ones.
				c.ResetConnections()
			}
			a.Overlay.Kick() // devices bound to the old address (VTEP local IP) now
		}
		renew := differs || !time.Now().Before(due)
		if !renew {
			renew, _ = a.IPAM.LeasesMissing(ctx) // after the IP check: it may wait on the store
		}
		if renew {
			if err := a.Driver.Reassert(ctx); err != nil {
				a.Log.Warn("network records not restored", "err", err)
			}
			if err := a.IPAM.Renew(ctx); err != nil {
				due = time.Now().Add(retry)
			} else {
				due, st.leased = time.Now().Add(every), now
			}
			if err := a.IPAM.ForgetEarlier(ctx); err != nil { // after takeovers in renewals
				a.Log.Error("leftovers of an earlier felt of this host not removed; retried at the next renewal", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(check):
		case <-keyChanged:
		}
	}
}

// published is what this host's leases publish that can change under
// them: its public IP and its WireGuard public key ("" for none).
type published struct {
	ip  netip.Addr
	key string
}

// renewState is what the renewal loop knows between its checks.
type renewState struct {
	// leased is what the leases publish: as of the last successful
	// renewal (zero before the first).
	leased published
	// seen is the last public IP and key a check found (an address that
	// could not be read, or no usable key, is not one): a change is
	// announced once, when first seen, not at each check until a renewal
	// succeeds.
	seen published
}

// look takes what the host publishes now. It reports whether its public
// IP and its key changed from the last ones seen (not the first ones seen,
// nor to none), to be announced, and whether the leases publish something
// else (renew at once).
func (s *renewState) look(now published) (ipMoved, keyMoved, differs bool) {
	if now.ip.IsValid() {
		ipMoved = s.seen.ip.IsValid() && now.ip != s.seen.ip
		s.seen.ip = now.ip
	}
	if now.key != "" {
		keyMoved = s.seen.key != "" && now.key != s.seen.key
		s.seen.key = now.key
	}
	return ipMoved, keyMoved, now != s.leased
}

// wireGuardKeyChanged is the wireguard backend's KeyChanged, or nil (never
// ready) without the backend.
func (a *App) wireGuardKeyChanged() <-chan struct{} {
	if a.backends == nil {
		return nil
	}
	b, err := a.backends.Get(wireguard.Name)
	if err != nil {
		return nil
	}
	wg, ok := b.(interface{ KeyChanged() <-chan struct{} })
	if !ok {
		return nil
	}
	return wg.KeyChanged()
}

// wireGuardKey is the public key this host's leases publish for the
// wireguard backend (it reads a replaced key file again), or "" without
// the backend or a usable key.
func (a *App) wireGuardKey() string {
	if a.backends == nil {
		return ""
	}
	b, err := a.backends.Get(wireguard.Name)
	if err != nil {
		return ""
	}
	wg, ok := b.(interface{ PublicKey() (wgtypes.Key, error) })
	if !ok {
		return ""
	}
	key, err := wg.PublicKey()
	if err != nil {
		return ""
	}
	return key.String()
}
