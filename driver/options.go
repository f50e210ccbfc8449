package driver

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/felt-net/felt/lease"
)

// Docker's option keys.
const (
	optGeneric    = "com.docker.network.generic"
	optInternal   = "com.docker.network.internal"
	optEnableIPv6 = "com.docker.network.enable_ipv6"
	optEnableIPv4 = "com.docker.network.enable_ipv4" // Docker 28+: false makes an IPv6-only network
	optMTU        = "com.docker.network.driver.mtu"
)

// The -o options felt understands, with what each accepts.
var allowedOptions = map[string]string{
	"backend":       "vxlan, host-gw or udp",
	"vni":           "1-16777215 (vxlan)",
	"directrouting": "true or false (vxlan)",
	"port":          "1-65535 (udp)",
	optMTU:          "68-65535",
}

func allowedList() string {
	keys := make([]string, 0, len(allowedOptions))
	for k := range allowedOptions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// netOptions are the parsed options of one CreateNetwork.
type netOptions struct {
	spec     lease.Spec
	internal bool
}

// parseOptions reads CreateNetwork's Options. Unknown -o keys are errors that
// list the allowed ones: a typo must not silently create a different network.
func parseOptions(opts map[string]any) (netOptions, error) {
	var o netOptions
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
			return fmt.Errorf("option %s=%s: must be %s", k, v, allowedOptions[k])
		}
		switch k {
		case "backend":
			switch v {
			case lease.BackendVXLAN, lease.BackendHostGW, lease.BackendUDP:
				o.spec.Backend = v
			default:
				return o, bad()
			}
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
		case optMTU:
			n, err := strconv.Atoi(v)
			if err != nil || n < 68 || n > 65535 {
				return o, bad()
			}
			o.spec.MTU = n
		default:
			return o, fmt.Errorf("unknown option %s: felt accepts %s", quote(k), allowedList())
		}
	}
	backend := o.spec.Backend
	if o.spec.VNI != 0 && backend != "" && backend != lease.BackendVXLAN {
		return o, fmt.Errorf("option vni applies to backend=vxlan only, not backend=%s", backend)
	}
	if o.spec.DirectRouting != nil && backend != "" && backend != lease.BackendVXLAN {
		return o, fmt.Errorf("option directrouting applies to backend=vxlan only, not backend=%s", backend)
	}
	if o.spec.Port != 0 && backend != lease.BackendUDP {
		return o, errors.New("option port applies to backend=udp only: add -o backend=udp")
	}
	return o, nil
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
