package plugin

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/felt-net/felt/names"
	"github.com/felt-net/felt/state"
)

// Settings are read from the environment, so the managed plugin (docker
// plugin set) and the bare binary are configured the same way.
type Settings struct {
	ConsulAddr string        // CONSUL_HTTP_ADDR; empty: embedded store
	KVPrefix   string        // FELT_KV_PREFIX
	StateDir   string        // FELT_STATE_DIR
	Iface      string        // FELT_IFACE; empty: the default route's
	PublicIP   netip.Addr    // FELT_PUBLIC_IP; invalid: the interface's
	Socket     string        // FELT_SOCKET
	LogLevel   slog.Level    // FELT_LOG_LEVEL
	LeaseTTL   time.Duration // FELT_LEASE_TTL
	Resync     time.Duration // FELT_RESYNC_INTERVAL: the periodic full reconcile
	ReadyWait  time.Duration // how long a call waits for start-up to finish
	Iptables   string        // FELT_IPTABLES: the iptables command; empty: the flavour Docker uses
	DockerHost string        // FELT_DOCKER_HOST: the Docker API of cluster networks, unix:///…; empty: off (no Docker API access)
	DriverName string        // FELT_DRIVER_NAME: this plugin's name in Docker; empty: detected
	MetricsOn  string        // FELT_METRICS_ADDR: host:port of /metrics, /healthz, /readyz; empty: off
	ProbeEvery time.Duration // FELT_PROBE_INTERVAL: each peer's health probe through the overlay; 0: off
	WireGuard  string        // FELT_WIREGUARD: auto, kernel or userspace (the wireguard backend's WireGuard)
	// MemoryLimit is FELT_MEMORY_LIMIT in bytes, Go's soft memory limit
	// for felt (runtime/debug.SetMemoryLimit); 0: none.
	MemoryLimit int64
	// GCPercent is FELT_GC_PERCENT, Go's GOGC for felt
	// (runtime/debug.SetGCPercent).
	GCPercent int
	Version   string // felt's version (cmd/felt sets it; not from the environment)

	// Container names across hosts (package names).
	DNS         netip.Addr // FELT_DNS: the address felt serves container names on; invalid: off
	DNSUpstream []string   // FELT_DNS_UPSTREAM: host:port resolvers to forward to; empty: /etc/resolv.conf's
}

// Defaults.
const (
	DefaultKVPrefix = "felt/"
	DefaultStateDir = "/var/lib/felt"
	DefaultSocket   = "/run/docker/plugins/felt.sock"
	DefaultLeaseTTL = 24 * time.Hour
	DefaultResync   = 30 * time.Second
	DefaultProbe    = 5 * time.Second

	// ManagedDockerDir is where config.json's "docker" mount puts the
	// host's /var/run: the directory, not the socket file, because dockerd
	// recreates its socket at every start and a file bind would keep the
	// dead one. Its existence tells a managed plugin from a bare binary.
	ManagedDockerDir  = "/run/felt-docker"
	ManagedDockerHost = "unix://" + ManagedDockerDir + "/docker.sock"
	// DefaultDockerHost is the bare binary's default, as for the docker CLI.
	DefaultDockerHost = "unix:///var/run/docker.sock"
)

// SettingNames lists every variable felt reads (for docs and errors).
// The CONSUL_* ones besides CONSUL_HTTP_ADDR are read by Consul's client.
// DOCKER_HOST is not among them: it is only the bare binary's default for
// FELT_DOCKER_HOST, and a managed plugin has no use for it.
// A function, so no caller can change the list for the others.
func SettingNames() []string { return slices.Clone(settingNames) }

var settingNames = []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL",
	"CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME", "FELT_KV_PREFIX", "FELT_STATE_DIR", "FELT_IFACE", "FELT_PUBLIC_IP",
	"FELT_SOCKET", "FELT_LOG_LEVEL", "FELT_LEASE_TTL", "FELT_RESYNC_INTERVAL", "FELT_IPTABLES",
	"FELT_DOCKER_HOST", "FELT_DRIVER_NAME", "FELT_METRICS_ADDR", "FELT_PROBE_INTERVAL", "FELT_DNS", "FELT_DNS_UPSTREAM", "FELT_WIREGUARD", "FELT_GC_PERCENT", "FELT_MEMORY_LIMIT"}

// SettingsFromEnv reads the settings; lookup is os.LookupEnv in production.
// FELT_DOCKER_HOST's default also depends on whether ManagedDockerDir exists.
func SettingsFromEnv(lookup func(string) (string, bool)) (Settings, error) {
	return settingsFrom(lookup, isDir)
}

// isDir reports whether path is a directory (following symlinks).
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// settingsFrom is SettingsFromEnv with the file system check injected.
func settingsFrom(lookup func(string) (string, bool), isDir func(string) bool) (Settings, error) {
	get := func(k, def string) string {
		if v, ok := lookup(k); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
		return def
	}
	s := Settings{
		ConsulAddr: get("CONSUL_HTTP_ADDR", ""),
		KVPrefix:   get("FELT_KV_PREFIX", DefaultKVPrefix),
		StateDir:   get("FELT_STATE_DIR", DefaultStateDir),
		Iface:      get("FELT_IFACE", ""),
		Socket:     get("FELT_SOCKET", DefaultSocket),
		Iptables:   get("FELT_IPTABLES", ""),
		ReadyWait:  25 * time.Second,
	}
	if !strings.HasSuffix(s.KVPrefix, "/") {
		s.KVPrefix += "/"
	}
	// The embedded store keeps this host's own records under local/ beside
	// the shared ones: a shared area there would mix the two.
	if strings.HasPrefix(s.KVPrefix, state.Key()) {
		return s, fmt.Errorf("FELT_KV_PREFIX=%s: %s is where felt keeps this host's own state; choose another prefix (default %s)", s.KVPrefix, state.Key(), DefaultKVPrefix)
	}
	// Consul's client reads CONSUL_HTTP_SSL itself but ignores a value it
	// cannot parse (with only a warning on stderr): refuse it here, so that
	// the user does not get TLS errors telling them to set what they set.
	if v := get("CONSUL_HTTP_SSL", ""); v != "" {
		if _, err := strconv.ParseBool(v); err != nil {
			return s, fmt.Errorf("CONSUL_HTTP_SSL=%s: must be true or false", v)
		}
	}
	if v := get("FELT_PUBLIC_IP", ""); v != "" {
		ip, err := netip.ParseAddr(v)
		if err != nil || !ip.Is4() {
			return s, fmt.Errorf("FELT_PUBLIC_IP=%s: must be an IPv4 address", v)
		}
		s.PublicIP = ip
	}
	switch lvl := strings.ToLower(get("FELT_LOG_LEVEL", "info")); lvl {
	case "debug":
		s.LogLevel = slog.LevelDebug
	case "info":
		s.LogLevel = slog.LevelInfo
	case "warn", "warning":
		s.LogLevel = slog.LevelWarn
	case "error":
		s.LogLevel = slog.LevelError
	default:
		return s, fmt.Errorf("FELT_LOG_LEVEL=%s: must be debug, info, warn or error", lvl)
	}
	var err error
	if s.LeaseTTL, err = duration(get("FELT_LEASE_TTL", DefaultLeaseTTL.String()), "FELT_LEASE_TTL", time.Second); err != nil {
		return s, err
	}
	if s.Resync, err = duration(get("FELT_RESYNC_INTERVAL", DefaultResync.String()), "FELT_RESYNC_INTERVAL", 100*time.Millisecond); err != nil {
		return s, err
	}
	if s.DockerHost, err = dockerHost(get, isDir); err != nil {
		return s, err
	}
	if s.DriverName = get("FELT_DRIVER_NAME", ""); s.DriverName != "" && !validDriverName(s.DriverName) {
		return s, fmt.Errorf("FELT_DRIVER_NAME=%s: must be this plugin's name as `docker plugin ls` shows it, [registry/][path/]name[:tag] in lower case (e.g. felt:latest); empty: detected", quotedSetting(s.DriverName))
	}
	if s.MetricsOn, err = metricsAddr(get("FELT_METRICS_ADDR", "")); err != nil {
		return s, err
	}
	if s.ProbeEvery, err = probeInterval(get("FELT_PROBE_INTERVAL", DefaultProbe.String())); err != nil {
		return s, err
	}
	if s.WireGuard, err = wireGuardMode(get("FELT_WIREGUARD", "auto")); err != nil {
		return s, err
	}
	if s.GCPercent, err = gcPercent(get("FELT_GC_PERCENT", strconv.Itoa(DefaultGCPercent))); err != nil {
		return s, err
	}
	if s.MemoryLimit, err = memoryLimit(get("FELT_MEMORY_LIMIT", "off")); err != nil {
		return s, err
	}
	if s.DNS, err = dnsAddr(get("FELT_DNS", DefaultDNS)); err != nil {
		return s, err
	}
	if s.DNSUpstream, err = names.ParseUpstreams(get("FELT_DNS_UPSTREAM", "")); err != nil {
		return s, err
	}
	return s, nil
}

// DefaultGCPercent is FELT_GC_PERCENT's default. Go's default (100) lets
// the heap grow to twice what is live before it collects; with 10,000
// leases the bursts of a full sync (netlink dumps of every neighbour, FDB
// entry and route) left felt at about 108 MiB resident. 50 collects at
// half again the live heap: a fixed factor of CPU at any scale, where a
// fixed memory limit would have the collector run back to back once the
// live heap outgrew it.
const DefaultGCPercent = 50

// gcPercent checks FELT_GC_PERCENT: 10 to 1000 (Go's GOGC; off is not
// offered: felt's heap would grow without bound).
func gcPercent(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 10 || n > 1000 {
		return 0, fmt.Errorf("FELT_GC_PERCENT=%s: must be a number from 10 to 1000, Go's GOGC for felt (the heap may grow by that many percent of what is live before it is collected; default %d)", quotedSetting(v), DefaultGCPercent)
	}
	return n, nil
}

// memoryLimit checks FELT_MEMORY_LIMIT: a size in bytes with an optional
// suffix B, KiB, MiB or GiB (as GOMEMLIMIT writes it), or off.
func memoryLimit(v string) (int64, error) {
	if strings.EqualFold(v, "off") {
		return 0, nil
	}
	num, unit := v, int64(1)
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			num, unit = n, u.size
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 1 || n > (1<<62)/unit || n*unit < 16<<20 {
		return 0, fmt.Errorf("FELT_MEMORY_LIMIT=%s: must be a size of at least 16MiB, in bytes or with a suffix KiB, MiB or GiB (e.g. 80MiB, 1GiB), Go's soft memory limit for felt, or off", quotedSetting(v))
	}
	return n * unit, nil
}

// wireGuardMode checks FELT_WIREGUARD: which WireGuard the wireguard
// backend runs.
func wireGuardMode(v string) (string, error) {
	switch m := strings.ToLower(v); m {
	case "auto", "kernel", "userspace":
		return m, nil
	}
	return "", fmt.Errorf("FELT_WIREGUARD=%s: must be auto (the kernel's WireGuard where its module exists, else wireguard-go in user space), kernel or userspace", quotedSetting(v))
}

// probeInterval checks FELT_PROBE_INTERVAL: 0 (off) or a duration of at
// least a second (each probe is two echoes per peer, and the prober caps
// them over all peers anyway).
func probeInterval(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err == nil && (d == 0 || d >= time.Second) {
		return d, nil
	}
	return 0, fmt.Errorf("FELT_PROBE_INTERVAL=%s: must be a duration of at least 1s (e.g. 5s), how often each peer is probed through the overlay, or 0 to turn probing off", quotedSetting(v))
}

// metricsAddr checks FELT_METRICS_ADDR: empty (off) or host:port with an
// IP address, localhost or nothing (every address) as host, and a port
// number. Names other than localhost are refused: the server binds once at
// start, and a name resolving elsewhere later would not be followed.
func metricsAddr(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(v)
	if err == nil {
		_, perr := strconv.ParseUint(port, 10, 16)
		_, herr := netip.ParseAddr(host)
		switch {
		case perr != nil || port == "0":
			err = fmt.Errorf("port %q is not a number from 1 to 65535", port)
		case host != "" && host != "localhost" && herr != nil:
			err = fmt.Errorf("host %q is not an IP address", host)
		}
	}
	if err != nil {
		return "", fmt.Errorf("FELT_METRICS_ADDR=%s: %v: must be host:port, the address to serve /metrics, /healthz and /readyz on "+
			"(e.g. 127.0.0.1:9475, or :9475 for every address of the host); empty: off", quotedSetting(v), err)
	}
	return v, nil
}

// DefaultDNS is FELT_DNS's default: link-local, so no network routes it,
// and not loopback, which Docker takes as the container's own.
const DefaultDNS = "169.254.53.53"

// dnsAddr checks FELT_DNS: off, or an IPv4 address containers can be
// routed to. Docker treats a loopback "dns" server as the container's own
// loopback, so felt would never see the query.
func dnsAddr(v string) (netip.Addr, error) {
	if strings.EqualFold(v, "off") {
		return netip.Addr{}, nil
	}
	ip, err := netip.ParseAddr(v)
	if err != nil || !ip.Is4() || ip.IsLoopback() || ip.IsMulticast() || ip.IsUnspecified() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("FELT_DNS=%s: must be the IPv4 address felt serves container names on, the one in daemon.json's \"dns\" on every host "+
			"(default %s; not loopback, which Docker takes as the container's own, nor multicast), or off", quotedSetting(v), DefaultDNS)
	}
	return ip, nil
}

// dockerHost picks the Docker API address of cluster networks: "" when
// FELT_DOCKER_HOST is off; else FELT_DOCKER_HOST; else DOCKER_HOST; else
// the managed plugin's mount if it exists, or the usual socket. felt runs
// beside its dockerd, which always has a unix socket, so only unix://
// addresses are taken: no TCP API without TLS, and no TLS settings to get
// wrong.
func dockerHost(get func(k, def string) string, isDir func(string) bool) (string, error) {
	host, from, note := get("FELT_DOCKER_HOST", ""), "FELT_DOCKER_HOST", ""
	switch {
	case strings.EqualFold(host, "off"):
		return "", nil
	case host != "":
	case get("DOCKER_HOST", "") != "":
		host, from, note = get("DOCKER_HOST", ""), "DOCKER_HOST", " (the default of FELT_DOCKER_HOST, which is unset; set that instead)"
	case isDir(ManagedDockerDir):
		return ManagedDockerHost, nil
	default:
		return DefaultDockerHost, nil
	}
	// The client takes what follows unix:// as the socket's path, as is.
	p, ok := strings.CutPrefix(host, "unix://")
	if !ok || !path.IsAbs(p) || path.Clean(p) != p || p == "/" || strings.ContainsFunc(p, unicode.IsControl) {
		return "", fmt.Errorf("%s=%s%s: must be unix:///path/to/docker.sock, this host's Docker API socket (e.g. %s), or off to run without Docker API access (no cluster networks)",
			from, quotedSetting(host), note, DefaultDockerHost)
	}
	return host, nil
}

// pluginName is a Docker plugin reference as `docker plugin ls` shows it:
// an optional registry host[:port], slash-separated lower-case path
// components, an optional tag. No digests: a driver name never has one.
var pluginName = regexp.MustCompile(`^(?:[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]+)?/)?` +
	`[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*` +
	`(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$`)

func validDriverName(v string) bool { return len(v) <= 255 && pluginName.MatchString(v) }

// quotedSetting shows a setting's value in an error, cut short and with
// anything unprintable escaped.
func quotedSetting(v string) string {
	if len(v) > 120 {
		v = v[:120] + "..."
	}
	if q := strconv.Quote(v); q[1:len(q)-1] != v {
		return q
	}
	return v
}

// BareDriverName is the name Docker knows a bare binary by: its socket's
// basename without .sock (felt for /run/docker/plugins/felt.sock). The
// cluster engine falls back to it when it finds no managed-plugin mount.
func (s Settings) BareDriverName() string {
	return strings.TrimSuffix(path.Base(s.Socket), ".sock")
}

func duration(v, name string, min time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < min {
		return 0, fmt.Errorf("%s=%s: must be a duration of at least %s (e.g. 24h, 30s)", name, v, min)
	}
	return d, nil
}

// FromOS reads the process environment.
func FromOS() (Settings, error) { return SettingsFromEnv(os.LookupEnv) }
