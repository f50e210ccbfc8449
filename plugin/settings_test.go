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
