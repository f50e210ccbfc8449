package instance

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"0a1b2c3d": true, "ffffffff": true,
		"": false, "0a1b2c3": false, "0a1b2c3d4": false, "0A1B2C3D": false,
		"0a1b2c3g": false, "0a1b:c3d": false, "0a1b2c3\x00": false, "felt:0a1": false,
	} {
		if Valid(s) != want {
			t.Errorf("Valid(%q) = %v, want %v", s, !want, want)
		}
		if (Check(s) == nil) != want {
			t.Errorf("Check(%q) = %v", s, Check(s))
		}
	}
}

func TestCheckCutsHostileText(t *testing.T) {
	err := Check(strings.Repeat("x", 1<<20) + "\n")
	if err == nil || len(err.Error()) > 200 || !strings.Contains(err.Error(), "1048577 bytes") {
		t.Fatalf("error of %d bytes: %.300v", len(err.Error()), err)
	}
}
