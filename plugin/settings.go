package plugin

import (
	"slices"
	"strconv"

	"github.com/felt-net/felt/state"

	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"
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
	Version    string        // felt's version (cmd/felt sets it; not from the environment)
}

// Defaults.
const (
	DefaultKVPrefix = "felt/"
	DefaultStateDir = "/var/lib/felt"
	DefaultSocket   = "/run/docker/plugins/felt.sock"
	DefaultLeaseTTL = 24 * time.Hour
	DefaultResync   = 30 * time.Second
)

// SettingNames lists every variable felt reads (for docs and errors).
// The CONSUL_* ones besides CONSUL_HTTP_ADDR are read by Consul's client.
// A function, so no caller can change the list for the others.
func SettingNames() []string { return slices.Clone(settingNames) }

var settingNames = []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL",
	"CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME", "FELT_KV_PREFIX", "FELT_STATE_DIR", "FELT_IFACE", "FELT_PUBLIC_IP",
	"FELT_SOCKET", "FELT_LOG_LEVEL", "FELT_LEASE_TTL", "FELT_RESYNC_INTERVAL", "FELT_IPTABLES"}

// SettingsFromEnv reads the settings; lookup is os.LookupEnv in production.
func SettingsFromEnv(lookup func(string) (string, bool)) (Settings, error) {
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
	return s, nil
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
