package firewall

import (
	"errors"
	"strings"
)

// splitRule splits one line of `iptables -S` into its words. Both flavours
// (nft and legacy, checked by the tests) print every word as it is, except
// a comment, which they wrap in double quotes with `"` and `\` escaped by a
// backslash. felt's own comments never need the escapes (see checkName), but
// the chains may hold rules of other felt instances, of older felt versions
// or of users, and each must be read back exactly to be deleted.
func splitRule(line string) ([]string, error) {
	var words []string
	for i := 0; i < len(line); {
		switch {
		case line[i] == ' ':
			i++
		case line[i] == '"':
			var w strings.Builder
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) {
					i++
				}
				w.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, errors.New("unterminated quote")
			}
			i++ // the closing quote
			words = append(words, w.String())
		default:
			j := strings.IndexByte(line[i:], ' ')
			if j < 0 {
				j = len(line) - i
			}
			words = append(words, line[i:i+j])
			i += j
		}
	}
	return words, nil
}

// ruleArgs returns the rule specification of an "-A chain ..." line of a
// listing (what -C, -I and -D take), and false for the other lines (-P, -N).
func ruleArgs(line, chain string) ([]string, bool, error) {
	prefix := "-A " + chain + " "
	if !strings.HasPrefix(line, prefix) {
		return nil, false, nil
	}
	args, err := splitRule(line[len(prefix):])
	return args, err == nil, err
}

// commentOf returns the --comment of a rule specification.
func commentOf(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--comment" {
			return args[i+1]
		}
	}
	return ""
}
