package driver

import (
	"strings"
	"testing"
)

func generic(kv ...string) map[string]any {
	g := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		g[kv[i]] = kv[i+1]
	}
	return map[string]any{optGeneric: g}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions(generic("backend", "vxlan", "vni", "77", "directrouting", "true", optMTU, "1400"), testBackends())
	if err != nil {
		t.Fatal(err)
	}
	if o.spec.Backend != "vxlan" || o.spec.VNI != 77 || o.spec.DirectRouting == nil || !*o.spec.DirectRouting || o.spec.MTU != 1400 {
		t.Fatalf("parsed %+v", o.spec)
	}
	o, err = parseOptions(map[string]any{optInternal: true}, testBackends())
	if err != nil || !o.internal {
		t.Fatalf("internal: %+v %v", o, err)
	}
	// Docker 28+ sends enable_ipv4, true for every network felt can serve.
	if _, err = parseOptions(map[string]any{optEnableIPv4: true, optGeneric: nil}, testBackends()); err != nil {
		t.Fatalf("enable_ipv4=true: %v", err)
	}
	if o, err = parseOptions(generic("backend", "udp", "port", "9000"), testBackends()); err != nil || o.spec.Port != 9000 {
		t.Fatalf("udp port: %+v %v", o, err)
	}
	for _, scope := range []string{scopeLocal, scopeCluster} {
		if o, err = parseOptions(generic("scope", scope), testBackends()); err != nil || o.scope != scope {
			t.Fatalf("scope=%s: %+v %v", scope, o, err)
		}
	}
}

func TestParseOptionsErrors(t *testing.T) {
	cases := []struct {
		opts map[string]any
		want string
	}{
		{generic("colour", "blue"), `unknown option "colour": felt accepts backend, com.docker.network.driver.mtu, directrouting, port, scope, vni`},
		{generic("scope", "global"), "option scope=global: must be local or cluster"},
		{generic("backend", "gre"), "option backend=gre: must be vxlan, host-gw, udp or wireguard"},
		{generic("vni", "0"), "option vni=0: must be 1-16777215"},
		{generic("vni", "x"), "option vni=x"},
		{generic("directrouting", "maybe"), "option directrouting=maybe: must be true or false"},
		{generic(optMTU, "20"), "option com.docker.network.driver.mtu=20: must be 68-65535"},
		{generic("backend", "host-gw", "vni", "5"), "vni applies to backend=vxlan only"},
		{generic("port", "9000"), "port applies to backend=udp or backend=wireguard only"},
		{map[string]any{optEnableIPv6: true}, "IPv4 only"},
		{map[string]any{optEnableIPv4: false}, "com.docker.network.enable_ipv4=false"},
		{map[string]any{optEnableIPv4: "false"}, "com.docker.network.enable_ipv4=false"},
		{map[string]any{optGeneric: []any{"backend", "udp"}}, "option com.docker.network.generic must be an object"},
		{generic("backend", strings.Repeat("x", 1000)), "option backend=" + strings.Repeat("x", 80) + "...: must be"},
	}
	for _, c := range cases {
		_, err := parseOptions(c.opts, testBackends())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error = %v, want %q", c.opts, err, c.want)
		}
	}
}
