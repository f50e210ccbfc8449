package names

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Upstreams are the resolvers felt forwards to: FELT_DNS_UPSTREAM if set,
// otherwise the nameservers of the plugin's /etc/resolv.conf (Docker
// bind-mounts the host's into a host-network plugin; felt is in the host's
// network namespace, so a 127.0.0.53 stub is reachable). The file is
// re-read when it changes, checked at most once a second.
type Upstreams struct {
	fixed []string
	path  string
	skip  netip.Addr // felt's own address: never forward to itself

	mu      sync.Mutex
	checked time.Time
	stamp   string
	servers []string
}

// ParseUpstreams checks a FELT_DNS_UPSTREAM value: ip[:port], comma
// separated. It returns host:port strings.
func ParseUpstreams(v string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if ip, err := netip.ParseAddr(f); err == nil {
			out = append(out, netip.AddrPortFrom(ip, 53).String())
			continue
		}
		ap, err := netip.ParseAddrPort(f)
		if err != nil || ap.Port() == 0 {
			return nil, fmt.Errorf("FELT_DNS_UPSTREAM=%s: %q is not ip or ip:port: must be a comma-separated list of resolvers felt forwards other names to (e.g. 10.0.0.2,10.0.0.3:5353); empty: the host's /etc/resolv.conf", v, f)
		}
		out = append(out, ap.String())
	}
	return out, nil
}

// NewUpstreams returns fixed if not empty, else the servers of the
// resolv.conf at path, without skip and Docker's 127.0.0.11.
func NewUpstreams(fixed []string, path string, skip netip.Addr) *Upstreams {
	return &Upstreams{fixed: fixed, path: path, skip: skip}
}

// Servers returns the upstreams as host:port, in order.
func (u *Upstreams) Servers() []string {
	if len(u.fixed) > 0 {
		return u.fixed
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if time.Since(u.checked) < time.Second && u.checked.After(time.Time{}) {
		return u.servers
	}
	u.checked = time.Now()
	stamp := ""
	if fi, err := os.Stat(u.path); err == nil {
		stamp = fi.ModTime().String() + "/" + strconv.FormatInt(fi.Size(), 10)
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			stamp += "/" + strconv.FormatUint(st.Ino, 10)
		}
	}
	if stamp == u.stamp && u.servers != nil {
		return u.servers
	}
	u.stamp = stamp
	cfg, err := dns.ClientConfigFromFile(u.path)
	if err != nil {
		u.servers = []string{}
		return u.servers
	}
	var out []string
	for _, s := range cfg.Servers {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip == u.skip || ip == netip.MustParseAddr("127.0.0.11") {
			continue
		}
		out = append(out, net.JoinHostPort(ip.String(), cfg.Port))
	}
	if len(out) > 3 {
		out = out[:3] // as resolv.conf's readers do
	}
	u.servers = append([]string{}, out...)
	return u.servers
}
