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
