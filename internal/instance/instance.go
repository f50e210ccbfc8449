// Package instance checks felt instances: the mark (the first 8 characters
// of a host ID) felt puts in the aliases of its links and devices and in
// the comments of its rules, so that felts sharing a namespace, and an
// earlier felt of this host, are told apart. An instance to forget comes
// from the shared store (through a lease's host ID): only one of exactly
// this shape may reach a match on aliases or comments, where a shorter or
// longer one would match another instance's objects by prefix.
package instance

import (
	"fmt"
	"strconv"
)

// Len is the length of an instance.
const Len = 8

// LowerHex reports whether s is made only of 0-9 and a-f (and not empty).
func LowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// Valid reports whether s is an instance as felt derives it.
func Valid(s string) bool { return len(s) == Len && LowerHex(s) }

// Check is Valid as an error naming what is allowed; hostile text is
// quoted and cut short.
func Check(s string) error {
	if Valid(s) {
		return nil
	}
	q := s
	if len(q) > 40 {
		q = q[:40]
	}
	msg := strconv.Quote(q)
	if len(q) < len(s) {
		msg += fmt.Sprintf("... (%d bytes)", len(s))
	}
	return fmt.Errorf("felt instance %s: must be %d lowercase hex characters (the first %d of a host ID)", msg, Len, Len)
}
