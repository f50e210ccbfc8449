package plugin

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestSettingsDefaults(t *testing.T) {
	s, err := SettingsFromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.ConsulAddr != "" || s.KVPrefix != "felt/" || s.StateDir != "/var/lib/felt" || s.Socket != "/run/docker/plugins/felt.sock" ||
		s.LeaseTTL != 24*time.Hour || s.Resync != 30*time.Second || s.PublicIP.IsValid() || s.Iptables != "" {
		t.Fatalf("defaults: %+v", s)
	}
}

func TestSettingsParsed(t *testing.T) {
	s, err := SettingsFromEnv(env(map[string]string{"CONSUL_HTTP_ADDR": "10.0.0.5:8500", "FELT_KV_PREFIX": "x",
		"FELT_PUBLIC_IP": "192.0.2.7", "FELT_LEASE_TTL": "10s", "FELT_LOG_LEVEL": "DEBUG",
		"FELT_IPTABLES": " /usr/sbin/iptables-legacy "}))
	if err != nil {
		t.Fatal(err)
	}
	if s.ConsulAddr != "10.0.0.5:8500" || s.KVPrefix != "x/" || s.PublicIP.String() != "192.0.2.7" || s.LeaseTTL != 10*time.Second ||
		s.Iptables != "/usr/sbin/iptables-legacy" {
		t.Fatalf("parsed: %+v", s)
	}
}

func TestSettingsErrorsNameTheVariable(t *testing.T) {
	for k, v := range map[string]string{"FELT_PUBLIC_IP": "nope", "FELT_LEASE_TTL": "soon", "FELT_LOG_LEVEL": "loud", "FELT_RESYNC_INTERVAL": "1ms", "FELT_KV_PREFIX": "local/shared/", "CONSUL_HTTP_SSL": "yes"} {
		_, err := SettingsFromEnv(env(map[string]string{k: v}))
		if err == nil || !strings.Contains(err.Error(), k+"="+v) {
			t.Errorf("%s=%s: error %v, want it to name the variable and value", k, v, err)
		}
	}
}

// The managed plugin's manifest declares exactly the variables felt reads,
// so that `docker plugin set` can set each of them.
func TestSettingNamesMatchManifest(t *testing.T) {
	b, err := os.ReadFile("../config.json")
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct{ Env []struct{ Name string } }
	if err := json.Unmarshal(b, &manifest); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range manifest.Env {
		names = append(names, e.Name)
	}
	if !slices.Equal(names, SettingNames()) {
		t.Errorf("config.json env: %q\nSettingNames:    %q", names, SettingNames())
	}
}

// FELT_DOCKER_HOST: off, a unix socket, or the default: DOCKER_HOST, the
// managed plugin's mount if it exists, the usual socket.
func TestSettingsDockerHost(t *testing.T) {
	for _, c := range []struct {
		name    string
		env     map[string]string
		managed bool
		want    string
	}{
		{"bare binary default", nil, false, "unix:///var/run/docker.sock"},
		{"managed plugin default", nil, true, "unix:///run/felt-docker/docker.sock"},
		{"DOCKER_HOST", map[string]string{"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, true, "unix:///run/user/1000/docker.sock"},
		{"set", map[string]string{"FELT_DOCKER_HOST": " unix:///tmp/felt-engine-ns2/docker.sock ", "DOCKER_HOST": "tcp://x:2375"}, true, "unix:///tmp/felt-engine-ns2/docker.sock"},
		{"off", map[string]string{"FELT_DOCKER_HOST": "off", "DOCKER_HOST": "unix:///x.sock"}, true, ""},
		{"OFF", map[string]string{"FELT_DOCKER_HOST": "OFF"}, false, ""},
		{"blank is unset", map[string]string{"FELT_DOCKER_HOST": " "}, true, "unix:///run/felt-docker/docker.sock"},
	} {
		s, err := settingsFrom(env(c.env), func(p string) bool { return c.managed && p == ManagedDockerDir })
		if err != nil || s.DockerHost != c.want {
			t.Errorf("%s: DockerHost %q, %v; want %q", c.name, s.DockerHost, err, c.want)
		}
	}
	for _, v := range []string{"tcp://127.0.0.1:2375", "ssh://me@host", "/var/run/docker.sock", "unix://var/run/docker.sock",
		"unix:/var/run/docker.sock", "unix:///", "unix:///run/../docker.sock", "unix:///run/x/", "npipe:////./pipe/docker_engine", "unix:///a\x00b"} {
		_, err := settingsFrom(env(map[string]string{"FELT_DOCKER_HOST": v}), func(string) bool { return false })
		if err == nil || !strings.Contains(err.Error(), "FELT_DOCKER_HOST=") || !strings.Contains(err.Error(), "unix:///") {
			t.Errorf("FELT_DOCKER_HOST=%q: error %v, want one naming the setting and what it takes", v, err)
		}
	}
	// A bad DOCKER_HOST is named as such, and the error says to set ours.
	_, err := settingsFrom(env(map[string]string{"DOCKER_HOST": "tcp://10.0.0.1:2376"}), func(string) bool { return false })
	if err == nil || !strings.Contains(err.Error(), "DOCKER_HOST=tcp://10.0.0.1:2376 (the default of FELT_DOCKER_HOST") {
		t.Errorf("DOCKER_HOST=tcp://…: error %v", err)
	}
}

func TestSettingsDriverName(t *testing.T) {
	for _, v := range []string{"felt", "felt:latest", "felt2:beta", "felt-net/felt:0.9.1", "localhost:5000/felt:latest",
		"registry.example.com/team/felt_x:v1.2-rc.1", "a__b", "a--b"} {
		s, err := SettingsFromEnv(env(map[string]string{"FELT_DRIVER_NAME": v}))
		if err != nil || s.DriverName != v {
			t.Errorf("FELT_DRIVER_NAME=%s: %q, %v", v, s.DriverName, err)
		}
	}
	if s, err := SettingsFromEnv(env(nil)); err != nil || s.DriverName != "" {
		t.Errorf("FELT_DRIVER_NAME unset: %q, %v; want empty (detected)", s.DriverName, err)
	}
	for _, v := range []string{"Felt:latest", "felt:", ":latest", "felt@sha256:0123", "/felt", "felt/", "felt//x", "fe lt",
		"felt:-x", "felt:" + strings.Repeat("x", 129), "-felt", "felt.", "felt:latest:2", "a\x00b", strings.Repeat("a", 256)} {
		_, err := SettingsFromEnv(env(map[string]string{"FELT_DRIVER_NAME": v}))
		if err == nil || !strings.Contains(err.Error(), "FELT_DRIVER_NAME=") || !strings.Contains(err.Error(), "felt:latest") {
			t.Errorf("FELT_DRIVER_NAME=%q: error %v, want one naming the setting and an example", v, err)
		}
	}
}

func TestBareDriverName(t *testing.T) {
	for sock, want := range map[string]string{"/run/docker/plugins/felt.sock": "felt", "/run/docker/plugins/ns2/felt2.sock": "felt2", "/tmp/x": "x"} {
		if got := (Settings{Socket: sock}).BareDriverName(); got != want {
			t.Errorf("BareDriverName(%s) = %q, want %q", sock, got, want)
		}
	}
}

// FELT_METRICS_ADDR: off by default; host:port with an IP, localhost or
// nothing as host; anything else refused naming the variable and the form.
func TestSettingsMetricsAddr(t *testing.T) {
	s, err := SettingsFromEnv(env(nil))
	if err != nil || s.MetricsOn != "" {
		t.Fatalf("default: %q, %v; want off", s.MetricsOn, err)
	}
	for _, ok := range []string{"127.0.0.1:9475", ":9475", "[::1]:9475", "localhost:9475", " 10.0.0.5:1 "} {
		s, err := SettingsFromEnv(env(map[string]string{"FELT_METRICS_ADDR": ok}))
		if err != nil || s.MetricsOn != strings.TrimSpace(ok) {
			t.Errorf("FELT_METRICS_ADDR=%q: %q, %v", ok, s.MetricsOn, err)
		}
	}
	for _, bad := range []string{"9475", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "metrics.example.org:9475", "http://127.0.0.1:9475"} {
		_, err := SettingsFromEnv(env(map[string]string{"FELT_METRICS_ADDR": bad}))
		if err == nil || !strings.Contains(err.Error(), "FELT_METRICS_ADDR="+bad+": ") || !strings.Contains(err.Error(), "must be host:port") {
			t.Errorf("FELT_METRICS_ADDR=%q: error %v; want it refused, naming the variable and the form", bad, err)
		}
	}
}

// FELT_PROBE_INTERVAL: 5s by default; 0 turns probing off; under a second,
// negative or not a duration is refused naming the variable.
func TestSettingsProbeInterval(t *testing.T) {
	s, err := SettingsFromEnv(env(nil))
	if err != nil || s.ProbeEvery != 5*time.Second {
		t.Fatalf("default: %v, %v; want 5s", s.ProbeEvery, err)
	}
	for v, want := range map[string]time.Duration{"0": 0, "0s": 0, "1s": time.Second, "1m": time.Minute} {
		s, err := SettingsFromEnv(env(map[string]string{"FELT_PROBE_INTERVAL": v}))
		if err != nil || s.ProbeEvery != want {
			t.Errorf("FELT_PROBE_INTERVAL=%s: %v, %v; want %v", v, s.ProbeEvery, err, want)
		}
	}
	for _, bad := range []string{"500ms", "-5s", "5", "often"} {
		_, err := SettingsFromEnv(env(map[string]string{"FELT_PROBE_INTERVAL": bad}))
		if err == nil || !strings.Contains(err.Error(), "FELT_PROBE_INTERVAL="+bad+": ") || !strings.Contains(err.Error(), "0 to turn probing off") {
			t.Errorf("FELT_PROBE_INTERVAL=%s: error %v; want it refused, naming the variable", bad, err)
		}
	}
}

// FELT_WIREGUARD: auto by default; auto, kernel or userspace in any case;
// anything else refused, naming the variable and the choices.
func TestSettingsWireGuard(t *testing.T) {
	for v, want := range map[string]string{"": "auto", "auto": "auto", "Kernel": "kernel", " userspace ": "userspace"} {
		s, err := SettingsFromEnv(env(map[string]string{"FELT_WIREGUARD": v}))
		if err != nil || s.WireGuard != want {
			t.Errorf("FELT_WIREGUARD=%q: %q, %v; want %q", v, s.WireGuard, err, want)
		}
	}
	for _, bad := range []string{"user", "wireguard-go", "on"} {
		_, err := SettingsFromEnv(env(map[string]string{"FELT_WIREGUARD": bad}))
		if err == nil || !strings.Contains(err.Error(), "FELT_WIREGUARD="+bad+": ") || !strings.Contains(err.Error(), "kernel or userspace") {
			t.Errorf("FELT_WIREGUARD=%s: error %v; want it refused, naming the variable", bad, err)
		}
	}
}

// FELT_MEMORY_LIMIT: a size as GOMEMLIMIT writes it, or off (the
// default); nonsense and sizes too small are refused, naming
// the setting.
func TestSettingsMemoryLimit(t *testing.T) {
	for v, want := range map[string]int64{
		"": 0, "80MiB": 80 << 20, "1GiB": 1 << 30, "20971520": 20 << 20, "65536KiB": 64 << 20, "33554432B": 32 << 20, "off": 0, "OFF": 0,
	} {
		s, err := settingsFrom(env(map[string]string{"FELT_MEMORY_LIMIT": v}), func(string) bool { return false })
		if err != nil || s.MemoryLimit != want {
			t.Errorf("FELT_MEMORY_LIMIT=%q: %d, %v; want %d", v, s.MemoryLimit, err, want)
		}
	}
	for _, v := range []string{"80M", "1MiB", "-5MiB", "lots", "9223372036854775807GiB"} {
		if _, err := settingsFrom(env(map[string]string{"FELT_MEMORY_LIMIT": v}), func(string) bool { return false }); err == nil || !strings.Contains(err.Error(), "FELT_MEMORY_LIMIT") {
			t.Errorf("FELT_MEMORY_LIMIT=%q: %v, want an error naming it", v, err)
		}
	}
}

// FELT_GC_PERCENT: 10 to 1000, DefaultGCPercent by default; anything else
// is refused, naming the setting.
func TestSettingsGCPercent(t *testing.T) {
	for v, want := range map[string]int{"": DefaultGCPercent, "100": 100, "10": 10, "1000": 1000} {
		s, err := settingsFrom(env(map[string]string{"FELT_GC_PERCENT": v}), func(string) bool { return false })
		if err != nil || s.GCPercent != want {
			t.Errorf("FELT_GC_PERCENT=%q: %d, %v; want %d", v, s.GCPercent, err, want)
		}
	}
	for _, v := range []string{"off", "-1", "9", "1001", "50%"} {
		if _, err := settingsFrom(env(map[string]string{"FELT_GC_PERCENT": v}), func(string) bool { return false }); err == nil || !strings.Contains(err.Error(), "FELT_GC_PERCENT") {
			t.Errorf("FELT_GC_PERCENT=%q: %v, want an error naming it", v, err)
		}
	}
}
