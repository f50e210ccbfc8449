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
// the new key), or a lease vanished from the store (peers would drop their
// routes to it).
func (a *App) renewLoop(ctx context.Context) {
	every := min(a.Settings.LeaseTTL/3, time.Hour)
	retry := min(time.Minute, a.Settings.LeaseTTL/10)
	check := min(every, a.Settings.Resync)
	var lastIP netip.Addr
	var lastKey string
	var due time.Time // zero: renew now
	for {
		key := a.wireGuardKey()
		keyChanged := key != lastKey
		if keyChanged && lastKey != "" {
			a.Log.Info("WireGuard public key changed (key file replaced); updating leases", "from", lastKey, "to", key)
			a.Overlay.Kick() // the devices take the new private key
		}
		ip, _ := a.Underlay.Addr()
		changed := ip != lastIP
		if changed && lastIP.IsValid() {
			a.Log.Info("public IP changed; updating leases", "from", lastIP, "to", ip)
			if c, ok := a.Shared.(kv.ConnectionResetter); ok {
				// Connections from the old address are dead: abort what
				// waits on them (the overlay's watch, say), which then
				// retries on fresh ones.
				c.ResetConnections()
			}
			a.Overlay.Kick() // devices bound to the old address (VTEP local IP) now
		}
		renew := changed || keyChanged || !time.Now().Before(due)
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
				due, lastIP, lastKey = time.Now().Add(every), ip, key
			}
			if err := a.IPAM.ForgetEarlier(ctx); err != nil { // after takeovers in renewals
				a.Log.Error("leftovers of an earlier felt of this host not removed; retried at the next renewal", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(check):
		}
	}
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
