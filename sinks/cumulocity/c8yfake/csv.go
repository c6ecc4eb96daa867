package c8yfake

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ParseSmartREST splits a SmartREST 2.0 payload into lines of fields.
//
//   - Lines end with LF (a CR before it is dropped); blank lines are skipped.
//   - Fields are separated by commas. Unquoted fields are trimmed of
//     surrounding whitespace.
//   - A field whose first non-blank character is '"' is quoted: it runs to
//     the closing quote and may contain commas, CR, LF and tabs. Inside it an
//     embedded quote may be written either as "" (RFC 4180, what thin-edge
//     sends and verified on a real tenant) or as \" (what the current
//     Cumulocity docs show): both are accepted. Only spaces and tabs may
//     follow the closing quote before the next comma or line end.
//   - A quote in the middle of an unquoted field is kept as is.
//
// Known ambiguity of accepting both styles: a quoted field whose text has a
// backslash right before a quote (e.g. `a\"b` written as "a\""b") is read
// differently by the two conventions; this parser prefers \" as an escape.
//
// An error names the 1-based line and says what is wrong; lines before it
// are returned too.
func ParseSmartREST(payload string) ([][]string, error) {
	var (
		lines    [][]string
		fields   []string
		field    strings.Builder
		quoted   bool // the current field was quoted
		inQuote  bool
		closed   bool // after the closing quote of the current field
		anyQuote bool // some field of the current line was quoted
		line     = 1
	)
	endField := func() {
		v := field.String()
		if !quoted {
			v = strings.TrimSpace(v)
		}
		fields = append(fields, v)
		field.Reset()
		quoted, closed = false, false
	}
	endLine := func() {
		endField()
		if len(fields) > 1 || fields[0] != "" || anyQuote {
			lines = append(lines, fields)
		}
		fields, anyQuote = nil, false
		line++
	}
	s := payload
	for i := 0; i < len(s); i++ {
		c := s[i]
		if inQuote {
			switch {
			case c == '\\' && i+1 < len(s) && s[i+1] == '"':
				field.WriteByte('"')
				i++
			case c == '"' && i+1 < len(s) && s[i+1] == '"':
				field.WriteByte('"')
				i++
			case c == '"':
				inQuote, closed = false, true
			default:
				if c == '\n' {
					line++
				}
				field.WriteByte(c)
			}
			continue
		}
		switch c {
		case ',':
			endField()
		case '\n':
			endLine()
		case '\r':
			if i+1 < len(s) && s[i+1] == '\n' {
				continue
			}
			field.WriteByte(c)
		case '"':
			if closed {
				return lines, fmt.Errorf("line %d: quote after the closing quote of a field", line)
			}
			if strings.TrimSpace(field.String()) == "" {
				field.Reset()
				inQuote, quoted, anyQuote = true, true, true
				continue
			}
			field.WriteByte(c)
		default:
			if closed {
				if c == ' ' || c == '\t' {
					continue
				}
				return lines, fmt.Errorf("line %d: text after the closing quote of a field", line)
			}
			field.WriteByte(c)
		}
	}
	if inQuote {
		return lines, fmt.Errorf("line %d: unterminated quoted field", line)
	}
	if len(fields) > 0 || field.Len() > 0 || quoted {
		endLine()
	}
	return lines, nil
}

// numberRE matches the numbers Cumulocity accepts as values: decimal with
// optional sign, fraction and exponent. NaN, Inf and hex are refused.
var numberRE = regexp.MustCompile(`^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$`)

// parseNumber reads a value field as Cumulocity would: a finite float64.
func parseNumber(s string) (float64, error) {
	if !numberRE.MatchString(s) {
		//lint:ignore ST1005 Cumulocity's own s/e text, word for word
		return 0, fmt.Errorf("Value is not a NUMBER: %s", s)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		//lint:ignore ST1005 Cumulocity's own s/e text, word for word
		return 0, fmt.Errorf("Value is not a NUMBER: %s", s)
	}
	return v, nil
}

// timeLayouts are the ISO 8601 forms accepted: an offset is required
// ("Z", "+01:00" or "+0100"), fractional seconds optional.
var timeLayouts = []string{
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999Z0700",
}

var errNoOffset = errors.New("time has no zone offset")

// parseTime parses a Cumulocity time: ISO 8601 with an offset.
func parseTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	if _, err := time.Parse("2006-01-02T15:04:05.999999999", s); err == nil {
		return time.Time{}, fmt.Errorf("%w: %q", errNoOffset, s)
	}
	return time.Time{}, fmt.Errorf("invalid time %q: want ISO 8601 with offset", s)
}

// checkName checks a fragment or series name: not empty, no whitespace and
// none of . , * [ ] ( ) @ $ (Cumulocity's documented restriction).
func checkName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s name", kind)
	}
	for _, r := range s {
		if strings.ContainsRune(".,*[]()@$", r) || r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f' || r == 0x85 || r == 0xA0 {
			return fmt.Errorf("illegal %s name %q", kind, s)
		}
	}
	return nil
}

// csvLine renders fields as one SmartREST line (used for s/e and s/ds
// replies): quoted when needed, inner quotes doubled.
func csvLine(fields ...string) string {
	var b strings.Builder
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		if f != strings.TrimSpace(f) || strings.ContainsAny(f, ",\"\r\n\t") {
			b.WriteByte('"')
			b.WriteString(strings.ReplaceAll(f, `"`, `""`))
			b.WriteByte('"')
			continue
		}
		b.WriteString(f)
	}
	return b.String()
}
