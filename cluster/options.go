package cluster

import (
	"maps"
	"strconv"
)

// Driver options whose values felt reads as numbers or booleans (see
// driver/options.go): two hosts that wrote `-o vni=07` and `-o vni=7` made
// the same network, so declarations compare these by meaning, not text.
var (
	intOptions  = []string{"vni", "port", "com.docker.network.driver.mtu"}
	boolOptions = []string{"directrouting"}
)

// sameDriverOptions reports whether a and b ask for the same network: equal
// after canonicalOptions. nil equals empty.
func sameDriverOptions(a, b map[string]string) bool {
	return maps.Equal(canonicalOptions(a), canonicalOptions(b))
}

// canonicalOptions is m with every value felt parses written one way (7 for
// 07 or +7, true for 1 or TRUE), and scope=cluster dropped: it is what a
// network without -o scope is too (a local network is never declared). A
// value that does not parse is kept as given: felt refused it at create,
// so it only ever matches itself.
func canonicalOptions(m map[string]string) map[string]string {
	out := maps.Clone(m)
	if out == nil {
		out = map[string]string{}
	}
	if out[OptScope] == scopeCluster {
		delete(out, OptScope)
	}
	for _, k := range intOptions {
		if v, ok := out[k]; ok {
			if n, err := strconv.Atoi(v); err == nil {
				out[k] = strconv.Itoa(n)
			}
		}
	}
	for _, k := range boolOptions {
		if v, ok := out[k]; ok {
			if b, err := strconv.ParseBool(v); err == nil {
				out[k] = strconv.FormatBool(b)
			}
		}
	}
	return out
}
