// Package field ties a validation error to the option it is about. A
// component's Validate returns every problem of its options, each a
// *Error naming the option's key; the configuration layer reports it
// with the line of that key, and the component's constructor refuses
// the same problems with the same words: each rule lives in one place.
package field

import (
	"errors"
	"fmt"
	"strings"
)

// Error is a problem with one option. Key is the option's key under the
// component's section in the config file ("url", "urls[1]",
// "stream.replicas"); "" means the component as a whole; a key that
// starts with "/" is outside the section ("/gateway.id").
type Error struct {
	Key string
	Err error
}

// Errorf returns a problem with the option at key.
func Errorf(key, format string, args ...any) *Error {
	return &Error{Key: key, Err: fmt.Errorf(format, args...)}
}

func (e *Error) Error() string {
	if e.Key == "" {
		return e.Err.Error()
	}
	return strings.TrimPrefix(e.Key, "/") + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// List collects problems; Err joins them (nil when there are none).
type List []error

// Add records a problem with the option at key.
func (l *List) Add(key, format string, args ...any) { *l = append(*l, Errorf(key, format, args...)) }

// Err returns the problems joined, or nil.
func (l List) Err() error { return errors.Join(l...) }

// Repeat reports the index at which value was first seen in a list, when it
// was; else it records i for it. seen maps values to their first index.
func Repeat(seen map[string]int, value string, i int) (first int, repeated bool) {
	if j, ok := seen[value]; ok {
		return j, true
	}
	seen[value] = i
	return i, false
}

// Accounts checks a list of logins at key ("users"; a key that starts with
// "/" is outside the section): each username present and unique, each
// password present (need says what it must be) and accepted by check.
// login(i) returns entry i's username and password.
func (l *List) Accounts(key string, n int, login func(i int) (username, password string), need string, check func(string) error) {
	seen := map[string]int{}
	for i := range n {
		base := fmt.Sprintf("%s[%d]", key, i)
		user, password := login(i)
		if user == "" {
			l.Add(base+".username", "required")
		} else if j, dup := Repeat(seen, user, i); dup {
			l.Add(base+".username", "duplicate username (also %s[%d])", strings.TrimPrefix(key, "/"), j)
		}
		if password == "" {
			l.Add(base+".password", "required (%s)", need)
		} else if err := check(password); err != nil {
			l.Add(base+".password", "%v", err)
		}
	}
}
