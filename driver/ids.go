package driver

import (
	"fmt"
	"strconv"
)

// Docker names networks and endpoints by 64 lowercase hex characters (a
// random 256-bit value). felt names its links after a prefix of these IDs
// (the kernel allows 15 characters), so an ID of any other shape is refused
// outright: it cannot come from Docker, and a short or crafted one could
// otherwise reach the links of another network or endpoint.
const idLen = 64

// checkID refuses an ID that is not what Docker sends, naming the field.
func checkID(field, id string) error {
	ok := len(id) == idLen
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		ok = '0' <= c && c <= '9' || 'a' <= c && c <= 'f'
	}
	if !ok {
		return fmt.Errorf("%s %s: must be the 64 lowercase hex characters Docker sends", field, quote(id))
	}
	return nil
}

// checkIDs checks field/ID pairs in order.
func checkIDs(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := checkID(pairs[i], pairs[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// maxQuoted bounds how much of a request's text goes into an error (and so
// into Docker's output and felt's log): a hostile megabyte is not echoed.
const maxQuoted = 80

// quote renders untrusted text for an error message: Go-quoted (control
// characters escaped) and cut to maxQuoted bytes.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:maxQuoted]) + fmt.Sprintf("... (%d bytes)", len(s))
}
