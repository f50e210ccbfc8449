package driver

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
)

// Docker's option keys.
const (
	optGeneric    = "com.docker.network.generic"
	optInternal   = "com.docker.network.internal"
	optEnableIPv6 = "com.docker.network.enable_ipv6"
	optEnableIPv4 = "com.docker.network.enable_ipv4" // Docker 28+: false makes an IPv6-only network
	optMTU        = "com.docker.network.driver.mtu"
)

// -o scope: cluster (the default with a Consul store and Docker API access)
// declares the network to every felt host; local keeps it to this one.
// Not Docker's own --scope, which a remote driver cannot serve.
const (
	optScope     = "scope"
	scopeLocal   = "local"
	scopeCluster = "cluster"
)

// The backend-specific -o options, and which backends take each (their
// overlay.Options say).
var backendOptions = []struct {
	key, values string
	takes       func(overlay.Options) bool
}{
	{"vni", "1-16777215", func(o overlay.Options) bool { return o.VNI }},
	{"directrouting", "true or false", func(o overlay.Options) bool { return o.DirectRouting }},
	{"port", "1-65535", func(o overlay.Options) bool { return o.DefaultPort != 0 }},
}

// allowedOptions are the -o options felt understands, with what each
// accepts, for the registered backends.
func allowedOptions(backends *overlay.Backends) map[string]string {
	allowed := map[string]string{
		"backend": orList(backends.Names()),
		optMTU:    "68-65535",
		optScope:  scopeLocal + " or " + scopeCluster,
	}
	for _, o := range backendOptions {
		allowed[o.key] = o.values + " (" + strings.Join(backends.Taking(o.takes), ", ") + ")"
	}
	return allowed
}

// orList is "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func allowedList(allowed map[string]string) string {
	keys := make([]string, 0, len(allowed))
	for k := range allowed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// netOptions are the parsed options of one CreateNetwork.
type netOptions struct {
	spec     lease.Spec
	internal bool
	scope    string // "" (not given), scopeLocal or scopeCluster
}

// parseOptions reads CreateNetwork's Options. Unknown -o keys are errors that
// list the allowed ones: a typo must not silently create a different network.
func parseOptions(opts map[string]any, backends *overlay.Backends) (netOptions, error) {
	allowed := allowedOptions(backends)
	o := netOptions{spec: lease.Spec{Backends: backends}}
	if v, ok := opts[optEnableIPv6]; ok && truthy(v) {
		return o, errors.New("felt supports IPv4 only: create the network without --ipv6")
	}
	if v, ok := opts[optEnableIPv4]; ok && falsy(v) {
		return o, fmt.Errorf("felt supports IPv4 networks only: %s=false (--ipv4=false) is not possible", optEnableIPv4)
	}
	o.internal = truthy(opts[optInternal])
	generic, ok := opts[optGeneric].(map[string]any)
	if !ok && opts[optGeneric] != nil {
		return o, fmt.Errorf("option %s must be an object of -o options, not %T", optGeneric, opts[optGeneric])
	}
	for k, raw := range generic {
		v := fmt.Sprint(raw)
		if s, ok := raw.(string); ok {
			v = s
		}
		if len(v) > maxQuoted {
			v = v[:maxQuoted] + "..."
		}
		bad := func() error {
			return fmt.Errorf("option %s=%s: must be %s", k, v, allowed[k])
		}
		switch k {
		case "backend":
			if _, err := backends.Get(v); err != nil {
				return o, bad()
			}
			o.spec.Backend = v
		case "vni":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1<<24-1 {
				return o, bad()
			}
			o.spec.VNI = n
		case "directrouting":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, bad()
			}
			o.spec.DirectRouting = &b
		case "port":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				return o, bad()
			}
			o.spec.Port = n
		case optScope:
			if v != scopeLocal && v != scopeCluster {
				return o, bad()
			}
			o.scope = v
		case optMTU:
			n, err := strconv.Atoi(v)
			if err != nil || n < 68 || n > 65535 {
				return o, bad()
			}
			o.spec.MTU = n
		default:
			return o, fmt.Errorf("unknown option %s: felt accepts %s", quote(k), allowedList(allowed))
		}
	}
	if err := checkBackendOptions(o.spec, backends); err != nil {
		return o, err
	}
	return o, nil
}

// checkBackendOptions refuses a backend-specific option the chosen backend
// does not take. Without -o backend, vni and directrouting are left to the
// record (the network may be recorded with a backend that takes them); a
// port needs the backend named (as it always has).
func checkBackendOptions(spec lease.Spec, backends *overlay.Backends) error {
	given := map[string]bool{"vni": spec.VNI != 0, "directrouting": spec.DirectRouting != nil, "port": spec.Port != 0}
	var takes overlay.Options
	if b, err := backends.Get(spec.Backend); err == nil {
		takes = b.Options()
	}
	for _, opt := range backendOptions {
		if !given[opt.key] || opt.takes(takes) {
			continue
		}
		only := "backend=" + strings.Join(backends.Taking(opt.takes), " or backend=")
		switch {
		case opt.key == "port":
			return fmt.Errorf("option %s applies to %s only: add -o %s", opt.key, only, only)
		case spec.Backend != "":
			return fmt.Errorf("option %s applies to %s only, not backend=%s", opt.key, only, spec.Backend)
		}
	}
	return nil
}

// falsy is truthy's counterpart: a boolean option explicitly false.
func falsy(v any) bool {
	switch t := v.(type) {
	case bool:
		return !t
	case string:
		b, err := strconv.ParseBool(t)
		return err == nil && !b
	}
	return false
}

// truthy reads Docker's boolean options, which arrive as JSON booleans or
// strings depending on the daemon version.
func truthy(v any) bool {
	switch t := v.(type) {
	case bool:
		return t
	case string:
		b, _ := strconv.ParseBool(t)
		return b
	}
	return false
}
