package overlay

import (
	"log/slog"

	"github.com/vishvananda/netlink"
)

// NewBackends returns the standard backends by name, all working through nl
// (a handle bound to the host's network namespace; nil means the current
// one). hostID derives this host's VTEP MAC (VtepMAC), which must match
// what its leases advertise.
func NewBackends(nl *netlink.Handle, host Host, hostID string, log *slog.Logger) map[string]Backend {
	nl = orDefault(nl)
	if log == nil {
		log = slog.Default()
	}
	return map[string]Backend{
		"vxlan":   &vxlan{nl: nl, host: host, hostID: hostID, log: log},
		"host-gw": &hostGW{nl: nl, host: host, log: log},
		"udp":     newUDP(nl, host, log),
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
