package broker

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Topic filters of the broker's access control (User.Subscribe,
// User.PublishTopics).
//
// A filter is an MQTT topic filter: levels separated by '/', '+' matching
// exactly one level, '#' (last level only) matching any number of levels,
// including none ("a/#" matches "a"). As in MQTT [MQTT-4.7.2-1], a filter
// starting with a wildcard does not match topics starting with '$', so "#"
// does not cover "$SYS/...": those need a filter naming "$SYS" itself.

// CheckFilter reports why filter is not a valid topic filter for an access
// rule, or nil. Shared-subscription filters ($share/...) are not rules.
func CheckFilter(filter string) error {
	switch {
	case filter == "":
		return errors.New("empty")
	case len(filter) > 65535:
		return errors.New("longer than 65535 bytes")
	case !utf8.ValidString(filter):
		return errors.New("not valid UTF-8")
	case strings.ContainsRune(filter, 0):
		return errors.New("contains NUL")
	}
	rest := filter
	for first := true; ; first = false {
		level, more := nextLevel(&rest)
		if first && strings.EqualFold(level, sharePrefix) && more {
			return errors.New("a $share/... filter is not an access rule: name the topics instead")
		}
		switch {
		case level == "#" && more:
			return errors.New("'#' must be the last level")
		case level != "#" && level != "+" && strings.ContainsAny(level, "+#"):
			return errors.New("'+' and '#' must fill a whole level")
		}
		if !more {
			return nil
		}
	}
}

const sharePrefix = "$share"

// nextLevel cuts the first level off *rest. more reports whether another
// level follows (a trailing '/' is followed by an empty level).
func nextLevel(rest *string) (level string, more bool) {
	level, after, more := strings.Cut(*rest, "/")
	*rest = after
	return level, more
}

// filter is a valid topic filter split into its levels.
type filter []string

// filters is a list of access rules; the zero value allows nothing.
type filters []filter

// newFilters splits each valid filter into levels.
func newFilters(list []string) (filters, error) {
	out := make(filters, 0, len(list))
	for _, f := range list {
		if err := CheckFilter(f); err != nil {
			return nil, &filterError{filter: f, err: err}
		}
		out = append(out, strings.Split(f, "/"))
	}
	return out, nil
}

type filterError struct {
	filter string
	err    error
}

func (e *filterError) Error() string {
	return "topic filter " + strconv.Quote(e.filter) + ": " + e.err.Error()
}
func (e *filterError) Unwrap() error { return e.err }

// allows reports whether one of fs covers requested: a topic name, or a
// subscription filter (possibly "$share/<group>/<filter>"), every topic of
// which must match the rule. An empty requested string is never covered.
func (fs filters) allows(requested string) bool {
	if requested == "" {
		return false
	}
	if share, rest, ok := strings.Cut(requested, "/"); ok && strings.EqualFold(share, sharePrefix) {
		_, requested, ok = strings.Cut(rest, "/") // drop the group
		if !ok || requested == "" {
			return false
		}
	}
	for _, f := range fs {
		if f.covers(requested) {
			return true
		}
	}
	return false
}

// covers reports whether every topic matched by requested (a topic name or
// a filter whose '+' and '#' are wildcards) is matched by f. For a topic
// name this is MQTT topic matching.
func (f filter) covers(requested string) bool {
	rest := requested
	more := true
	for i := 0; ; i++ {
		if i == len(f) {
			// f ends: requested must end here too.
			return !more
		}
		a := f[i]
		if a == "#" {
			// Everything from here down, except '$' topics for a
			// filter starting with a wildcard [MQTT-4.7.2-1].
			return !(i == 0 && strings.HasPrefix(requested, "$"))
		}
		if !more {
			// requested ended with levels of f left; "x/#" matching
			// "x" was handled above, so nothing else covers it.
			return false
		}
		var r string
		r, more = nextLevel(&rest)
		switch {
		case r == "#":
			return false // f has no '#' here, so it cannot match every depth
		case r == "+":
			if a != "+" {
				return false
			}
		case a == "+":
			if i == 0 && strings.HasPrefix(r, "$") {
				return false
			}
		case a != r:
			return false
		}
	}
}

// String joins the levels back into the filter text.
func (f filter) String() string { return strings.Join(f, "/") }
