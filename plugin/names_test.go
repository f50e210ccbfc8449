package plugin

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestSettingsDNS(t *testing.T) {
	s, err := SettingsFromEnv(env(nil))
	if err != nil || s.DNS != netip.MustParseAddr(DefaultDNS) || len(s.DNSUpstream) != 0 {
		t.Fatalf("defaults: DNS %v upstream %v, %v", s.DNS, s.DNSUpstream, err)
	}
	s, err = SettingsFromEnv(env(map[string]string{"FELT_DNS": "OFF", "FELT_DNS_UPSTREAM": "10.0.0.2,10.0.0.3:5353"}))
	if err != nil || s.DNS.IsValid() || !slices.Equal(s.DNSUpstream, []string{"10.0.0.2:53", "10.0.0.3:5353"}) {
		t.Fatalf("off: DNS %v upstream %v, %v", s.DNS, s.DNSUpstream, err)
	}
	for k, v := range map[string]string{"FELT_DNS": "127.0.0.53", "FELT_DNS_UPSTREAM": "dns.example"} {
		if _, err := SettingsFromEnv(env(map[string]string{k: v})); err == nil || !strings.Contains(err.Error(), k+"=") {
			t.Errorf("%s=%s: %v, want an error naming it", k, v, err)
		}
	}
	for _, v := range []string{"224.0.0.53", "0.0.0.0", "fe80::53", "x"} {
		if _, err := SettingsFromEnv(env(map[string]string{"FELT_DNS": v})); err == nil {
			t.Errorf("FELT_DNS=%s accepted", v)
		}
	}
}
