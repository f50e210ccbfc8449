package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ModuleRoot is the directory of felt's go.mod, found by walking up from
// the working directory (a test's is its package directory): where bin/
// and scripts/ are.
func ModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/felt-net/felt") {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("felt's go.mod not found above %s", wd)
		}
	}
}
