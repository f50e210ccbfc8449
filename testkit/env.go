package testkit

import "strings"

// SetEnv returns a copy of env (NAME=value entries, as exec.Cmd.Env takes
// them) with each NAME=value of set replacing the entries of the same name,
// or appended. "NAME=" empties a variable, which Consul's client takes as
// unset.
func SetEnv(env []string, set ...string) []string {
	out := append([]string{}, env...)
	for _, s := range set {
		name, _, _ := strings.Cut(s, "=")
		replaced := false
		for i, e := range out {
			if strings.HasPrefix(e, name+"=") {
				out[i], replaced = s, true
			}
		}
		if !replaced {
			out = append(out, s)
		}
	}
	return out
}
