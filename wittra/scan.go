package wittra

import (
	"encoding/json"
	"unicode/utf8"
)

// A small JSON scanner over raw bytes. It reads only what the callers need
// (member keys and raw value spans), keeps number text as received and never
// allocates on the common path. It does not validate the grammar: callers
// that publish what they read (Values) run json.Valid first; on malformed
// input the scanner stops with bad set, it never reads out of bounds.

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the string that opens at b[i] ('"'),
// or -1 when it is not terminated.
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// valueEnd returns the index just past the value that starts at b[i], or -1.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				if i = stringEnd(b, i); i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default: // number, true, false, null
		start := i
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ':', '"', '{', '[', ' ', '\t', '\n', '\r':
				if i == start {
					return -1
				}
				return i
			}
			i++
		}
		if i == start {
			return -1
		}
		return i
	}
}

// members iterates over the members of one JSON object.
type members struct {
	b   []byte
	i   int  // start of the next member, or of the closing brace
	bad bool // malformed input met; iteration stopped
}

// object returns an iterator over the object v (a raw value); ok is false
// when v is not an object.
func object(v []byte) (m members, ok bool) {
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '{' {
		return members{}, false
	}
	return members{b: v, i: skipSpace(v, i+1)}, true
}

// next returns the raw key (between the quotes, escapes left in) and the raw
// value of the next member. ok is false after the last member or when the
// input is malformed (then bad is set).
func (m *members) next() (key, val []byte, ok bool) {
	b, i := m.b, m.i
	if i >= len(b) || b[i] != '"' {
		m.bad = m.bad || i >= len(b) || b[i] != '}'
		return nil, nil, false
	}
	ke := stringEnd(b, i)
	if ke < 0 {
		m.bad = true
		return nil, nil, false
	}
	key = b[i+1 : ke-1]
	i = skipSpace(b, ke)
	if i >= len(b) || b[i] != ':' {
		m.bad = true
		return nil, nil, false
	}
	vs := skipSpace(b, i+1)
	ve := valueEnd(b, vs)
	if ve < 0 {
		m.bad = true
		return nil, nil, false
	}
	i = skipSpace(b, ve)
	if i < len(b) && b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	m.i = i
	return key, b[vs:ve], true
}

// pick walks the rest of the object and returns the raw values of the
// members named names (at most 6), in that order: nil when absent, the last
// when a name repeats. Check m.bad afterwards.
func (m *members) pick(names ...string) (vals [6][]byte) {
	for k, v, more := m.next(); more; k, v, more = m.next() {
		key := keyText(k)
		for i, n := range names {
			if string(key) == n {
				vals[i] = v
			}
		}
	}
	return vals
}

// unquote returns the text of the JSON string raw (quotes included). The
// common case, no escapes and valid UTF-8, returns a slice of raw; otherwise
// it decodes like encoding/json (invalid UTF-8 becomes U+FFFD).
func unquote(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, false
	}
	s := raw[1 : len(raw)-1]
	if plain(s) {
		return s, true
	}
	var out string
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, false
	}
	return []byte(out), true
}

// keyText returns the decoded text of a raw key as given by members.next.
func keyText(key []byte) []byte {
	if plain(key) {
		return key
	}
	quoted := make([]byte, 0, len(key)+2)
	quoted = append(append(append(quoted, '"'), key...), '"')
	out, ok := unquote(quoted)
	if !ok {
		return nil
	}
	return out
}

// plain reports whether the string content s needs no decoding: no escape,
// no control character, valid UTF-8.
func plain(s []byte) bool {
	ascii := true
	for _, c := range s {
		if c == '\\' || c < 0x20 {
			return false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	return ascii || utf8.Valid(s)
}

// jsonString reports how the raw value v reads as an optional string field:
// null gives present=false; a string gives its text; anything else ok=false.
func jsonString(v []byte) (s []byte, present, ok bool) {
	switch {
	case len(v) == 0:
		return nil, false, false
	case v[0] == 'n':
		return nil, false, true
	case v[0] == '"':
		s, ok = unquote(v)
		return s, ok, ok
	}
	return nil, true, false
}
