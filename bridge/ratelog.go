package bridge

import (
	"net"
	"sync"
	"time"
)

// maxLogKeys bounds the limiter's memory under a flood of addresses.
const maxLogKeys = 10000

// logLimiter lets one refusal per (address, code) through per interval and
// counts the rest, so a misconfigured portal or a scanner cannot flood the
// journal.
type logLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	seen     map[logKey]*logEntry
}

type logKey struct {
	ip     string
	code   int
	reason string // the refusal's text with digits folded: a second, different 400 is not hidden
}

type logEntry struct {
	last       time.Time
	suppressed int
}

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval, seen: make(map[logKey]*logEntry)}
}

// allow reports whether to log this refusal, and how many alike were
// suppressed since the last logged one. Refusals are alike when they come
// from the same address with the same code and the same reason up to its
// numbers (byte offsets, element indexes).
func (l *logLimiter) allow(remoteAddr string, code int, reason string, now time.Time) (bool, int) {
	ip, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		ip = remoteAddr
	}
	k := logKey{ip, code, foldDigits(reason)}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.seen[k]
	if !ok {
		if len(l.seen) >= maxLogKeys {
			clear(l.seen)
		}
		l.seen[k] = &logEntry{last: now}
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

// foldDigits replaces each run of digits by one '#', and keeps at most 64
// bytes: the class of a refusal reason.
func foldDigits(s string) string {
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
