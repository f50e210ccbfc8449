package overlay

import (
	"log/slog"

	"github.com/vishvananda/netlink"
)

// BackendConfig is what the standard backends share.
type BackendConfig struct {
	// Netlink is a handle bound to the host's network namespace; nil means
	// the current one.
	Netlink *netlink.Handle
	Host    Host
	// HostID derives this host's VTEP MAC (VtepMAC), which must match what
	// its leases advertise.
	HostID string
	// Instance names this felt in the owner mark of every device the
	// backends create (OwnerAlias); empty means the first 8 characters of
	// HostID, as the plugin derives it.
	Instance string
	Log      *slog.Logger
}

// NewBackends returns the standard backends by name.
func NewBackends(cfg BackendConfig) map[string]Backend {
	nl := orDefault(cfg.Netlink)
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	instance := instanceOf(cfg.Instance, cfg.HostID)
	return map[string]Backend{
		"vxlan":   &vxlan{nl: nl, host: cfg.Host, hostID: cfg.HostID, instance: instance, log: log},
		"host-gw": &hostGW{nl: nl, host: cfg.Host, log: log},
		"udp":     newUDP(nl, cfg.Host, instance, log),
	}
}

// orDefault turns a nil handle into one on the current namespace, which is
// what the netlink package's own functions use.
func orDefault(nl *netlink.Handle) *netlink.Handle {
	if nl == nil {
		return &netlink.Handle{}
	}
	return nl
}
