package nsutil

import (
	"errors"
	"testing"

	"github.com/vishvananda/netns"
)

// A closed handle means the current namespace: fn runs as it is, on any
// thread, and its error comes back unwrapped.
func TestDoClosedHandleRunsHere(t *testing.T) {
	want := errors.New("from fn")
	ran := false
	err := Do(netns.None(), func() error { ran = true; return want })
	if !ran || err != want {
		t.Fatalf("Do(None) ran %v, returned %v; want fn run and its error", ran, err)
	}
}
