package probe

import (
	"strconv"
	"time"
)

// record stores r as t's latest result and reports what changed: in the
// log once per change (never per probe), and always to the Observer.
// Called with p.mu held.
func (p *Prober) record(t Target, r Result) {
	k := KeyOf(t)
	old, had := p.results[k]
	if _, live := p.targets[k]; !live {
		return // the peer left while its probe was under way
	}
	if !had || !old.Probed || old.Reachable != r.Reachable || old.MTUOK != r.MTUOK {
		r.Since = r.Last
	} else {
		r.Since = old.Since
	}
	p.results[k] = r
	p.logChange(t, old, r)
	if o := p.cfg.Observer; o != nil {
		pool, peer := t.Pool.String(), t.PublicIP.String()
		o.SetPeer(pool, peer, r.Reachable, r.RTT)
		o.SetPeerMTU(pool, peer, r.Reachable && r.MTUOK)
	}
}

// logChange logs a change of reachability or of full-size packets. The
// first result of a peer is logged only when something is wrong (1,000
// healthy peers are not 1,000 lines at every start).
func (p *Prober) logChange(t Target, old, r Result) {
	attrs := func(extra ...any) []any {
		return append([]any{"pool", t.Pool, "peer", t.PublicIP, "host", short(t.HostID), "subnet", t.Subnet,
			"gateway", t.Dst, "backend", t.Backend}, extra...)
	}
	log := p.cfg.Log
	switch {
	case !r.Reachable && (!old.Probed || old.Reachable):
		log.Warn("peer unreachable over the overlay", attrs("err", r.Err, "hint", Hint(t.Backend))...)
	case r.Reachable && old.Probed && !old.Reachable:
		log.Info("peer reachable again over the overlay", attrs("rtt", r.RTT)...)
		if !r.MTUOK {
			log.Warn("peer reachable, but full-size packets lost", attrs("mtu", t.MTU, "err", r.Err)...)
		}
	case r.Reachable && !r.MTUOK && (!old.Probed || old.MTUOK):
		log.Warn("peer reachable, but full-size packets lost", attrs("mtu", t.MTU, "err", r.Err)...)
	case r.Reachable && r.MTUOK && old.Probed && old.Reachable && !old.MTUOK:
		log.Info("full-size packets to peer pass again", attrs("mtu", t.MTU)...)
	case !old.Probed:
		log.Debug("peer reachable over the overlay", attrs("rtt", r.RTT)...)
	}
}

// forget drops a peer that left (its lease expired or was released, or
// the network was detached): its result and metrics series go. Called
// with p.mu held.
func (p *Prober) forget(k Key) {
	delete(p.results, k)
	if o := p.cfg.Observer; o != nil {
		o.ForgetPeer(k.Pool.String(), k.PublicIP.String())
	}
	p.cfg.Log.Debug("peer no longer probed", "pool", k.Pool, "peer", k.PublicIP, "host", short(k.HostID))
}

// Hint is what to check when a peer of a network of backend is
// unreachable over the overlay.
func Hint(backend string) string {
	switch backend {
	case "vxlan":
		return "udp/4789 blocked between the hosts? (check the hosts' and the network's firewalls)"
	case "udp":
		return "the network's udp port (default 8285) blocked between the hosts?"
	case "wireguard":
		return "the network's udp port (default 51820) blocked between the hosts, or no handshake (felt status lists each WireGuard peer's key and latest handshake)?"
	case "host-gw":
		return "peer off this host's L2 segment (host-gw needs one), or IP forwarding / a firewall on the way?"
	default:
		return "the overlay's traffic blocked between the hosts?"
	}
}

// short is a host ID as felt's logs show it: its instance, the first 8 characters.
func short(id string) string { return id[:min(8, len(id))] }

// now is the time results are stamped with (a field for tests).
func (p *Prober) now() time.Time { return p.cfg.Now() }

func itoa(n int) string { return strconv.Itoa(n) }
