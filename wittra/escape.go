package wittra

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// TopicID makes a device or project id safe as one topic level, so that a
// message is never refused for the shape of its id. Ids that need nothing
// (the Wittra ids seen in practice: letters and digits) come back unchanged.
// Otherwise the encoding is percent-escaping, reversible by UnescapeID:
// '%' itself, '/', '+', '#', control characters (NUL and 0x01–0x1F, 0x7F)
// and the bytes of invalid UTF-8 become %XX (upper-case hex). The result is
// then checked by CheckID: only an id longer than MaxIDLen after escaping
// is refused (it cannot be shortened reversibly).
func TopicID(s string) (string, error) {
	if idSafe(s) {
		return s, CheckID(s)
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if needsEscape(c) {
				fmt.Fprintf(&b, "%%%02X", c)
			} else {
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			fmt.Fprintf(&b, "%%%02X", c)
			i++
			continue
		}
		b.WriteString(s[i : i+n])
		i += n
	}
	out := b.String()
	return out, CheckID(out)
}

// UnescapeID reverses TopicID: it gives the id as Wittra sent it.
func UnescapeID(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func idSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			return false
		}
	}
	return utf8.ValidString(s)
}

func needsEscape(c byte) bool {
	return c == '%' || c == '/' || c == '+' || c == '#' || c < 0x20 || c == 0x7F
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' || 'a' <= c && c <= 'f'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}
