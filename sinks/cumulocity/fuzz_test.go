package cumulocity

import (
	"strings"
	"testing"
	"unicode/utf8"

	"wittra-gateway/sinks/cumulocity/c8yfake"
)

// FuzzSmartRESTEncoding: whatever text a Wittra label or event carries, the
// line we send parses back (with the fake's SmartREST parser, which accepts
// both quote conventions) to the same fields, one line, nothing shifted.
// The only change allowed is the documented one: backslashes right before a
// quote are dropped from quoted fields.
func FuzzSmartRESTEncoding(f *testing.F) {
	for _, seed := range []string{
		"Hall B", "a,b", `say "hi"`, " edge ", "multi\nline", "tab\there", "Förråd 7, \"north\"",
		`path\"x`, `ends\`, "", "\r\n", "日本語,テスト",
	} {
		f.Add(seed, "wittra_DEVICE_UPDATED")
	}
	f.Fuzz(func(t *testing.T, text, typ string) {
		if !utf8.ValidString(text) || !utf8.ValidString(typ) {
			return // JSON strings are valid UTF-8
		}
		line := csvLine("400", typ, text, "2024-03-12T09:00:00.000Z")
		lines, err := c8yfake.ParseSmartREST(line)
		if err != nil {
			t.Fatalf("our line %q does not parse: %v", line, err)
		}
		if len(lines) != 1 || len(lines[0]) != 4 {
			t.Fatalf("line %q parsed as %d lines %q, want 1 line of 4 fields", line, len(lines), lines)
		}
		for i, want := range []string{"400", typ, text, "2024-03-12T09:00:00.000Z"} {
			if needsQuote(want) {
				want = stripBackslashQuote(want)
			} else {
				want = strings.TrimSpace(want)
			}
			if lines[0][i] != want {
				t.Fatalf("field %d of %q = %q, want %q", i, line, lines[0][i], want)
			}
		}
	})
}
