package wireguard

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// auto uses the kernel's WireGuard when its device can be made, wireguard-go
// when the kernel does not know the device type, and reports other
// failures (no permission, say) rather than hiding them behind user space;
// kernel insists; userspace never asks the kernel.
func TestChooseImplementation(t *testing.T) {
	noModule := fmt.Errorf("link add: %w", unix.EOPNOTSUPP)
	for _, tc := range []struct {
		mode    string
		kerr    error
		want    string
		wantErr string
	}{
		{ModeAuto, nil, ImplKernel, ""},
		{ModeAuto, noModule, ImplUserspace, ""},
		{ModeAuto, unix.ENODEV, ImplUserspace, ""},
		{ModeAuto, unix.EPERM, "", "operation not permitted"},
		{ModeAuto, unix.EEXIST, "", "file exists"},
		{ModeKernel, nil, ImplKernel, ""},
		{ModeKernel, noModule, "", "FELT_WIREGUARD=kernel, but this kernel has no WireGuard"},
		{ModeKernel, unix.EPERM, "", "operation not permitted"},
		{ModeUserspace, nil, ImplUserspace, ""},
		{ModeUserspace, noModule, ImplUserspace, ""},
	} {
		got, err := choose(tc.mode, tc.kerr)
		if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("choose(%s, %v) = %q, %v; want %q, error %q", tc.mode, tc.kerr, got, err, tc.want, tc.wantErr)
		}
		if err != nil && tc.kerr != nil && !errors.Is(err, tc.kerr) {
			t.Errorf("choose(%s, %v): error %v does not wrap the kernel's", tc.mode, tc.kerr, err)
		}
	}
}
