package wittra

import (
	"fmt"
	"time"
)

// timeLayouts are the timestamp forms Wittra's documented payloads use, in
// the order tried (each has a fixture in testdata). A layout with .999999999 also accepts no fraction;
// layouts without a zone read the time as UTC.
var timeLayouts = [...]string{
	time.RFC3339Nano,                      // 2021-06-04T13:47:48.256000+00:00
	"2006-01-02 15:04:05.999999999Z07:00", // 2025-06-10 00:18:57+00:00
	"2006-01-02T15:04:05.999999999",       // 2021-06-04T13:47:48.256000 (UTC)
	"2006-01-02 15:04:05.999999999",
}

// ParseTime parses the Wittra timestamp forms: RFC3339Nano,
// "2006-01-02 15:04:05.999999Z07:00" (space), and both forms without zone
// (read as UTC), with or without fractional seconds. The time is returned in
// UTC, whatever the offset it was written with, so that it formats the same
// on every host.
func ParseTime(s string) (time.Time, error) {
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return time.Time{}, fmt.Errorf("%w: %q", ErrTime, s)
}

// Timestamp returns the message time: top-level "timestamp" (all Wittra
// forms), else, when it is absent or null, location.timestamp (shape E); ok=false
// when absent or unparseable.
func Timestamp(body []byte) (t time.Time, ok bool) {
	m, isObj := object(body)
	if !isObj {
		return time.Time{}, false
	}
	f := m.pick("timestamp", "location")
	ts, loc := f[0], f[1]
	if m.bad {
		return time.Time{}, false
	}
	if (ts == nil || ts[0] == 'n') && loc != nil {
		lm, isObj := object(loc)
		if !isObj {
			return time.Time{}, false
		}
		ts = lm.pick("timestamp")[0]
	}
	s, present, isStr := jsonString(ts)
	if !present || !isStr {
		return time.Time{}, false
	}
	t, err := ParseTime(string(s))
	return t, err == nil
}
