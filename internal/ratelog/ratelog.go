// Package ratelog lets one log line per key through per interval and
// counts the others, so that a misconfigured client or a scanner cannot
// flood the journal with the same refusal.
package ratelog

import (
	"sync"
	"time"
)

// MaxKeys bounds a Limiter's memory under a flood of distinct keys: when
// it is reached, every key is forgotten (the next line of each is logged).
const MaxKeys = 10000

// Limiter is safe for concurrent use.
type Limiter[K comparable] struct {
	interval time.Duration
	mu       sync.Mutex
	seen     map[K]*entry
}

type entry struct {
	last       time.Time
	suppressed int
}

// New returns a limiter that lets one line per key through per interval.
func New[K comparable](interval time.Duration) *Limiter[K] {
	return &Limiter[K]{interval: interval, seen: make(map[K]*entry)}
}

// Allow reports whether to log the line of key k at now, and how many lines
// of k were suppressed since the last one logged.
func (l *Limiter[K]) Allow(k K, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.seen[k]
	if !found {
		if len(l.seen) >= MaxKeys {
			clear(l.seen)
		}
		l.seen[k] = &entry{last: now}
		return true, 0
	}
	if now.Sub(e.last) < l.interval {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}

// Fold replaces each run of digits by one '#' and keeps at most 64 bytes:
// the class of a message, so that varying numbers (offsets, indexes) do not
// make every line a new key.
func Fold(s string) string {
	b := make([]byte, 0, min(len(s), 64))
	for i := 0; i < len(s) && len(b) < 64; i++ {
		c := s[i]
		if c >= '0' && c <= '9' {
			if len(b) == 0 || b[len(b)-1] != '#' {
				b = append(b, '#')
			}
			continue
		}
		b = append(b, c)
	}
	return string(b)
}
