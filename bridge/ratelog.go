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
	ip   string
	code int
}

type logEntry struct {
	last       time.Time
	suppressed int
}

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval, seen: make(map[logKey]*logEntry)}
}

// allow reports whether to log this refusal, and how many identical ones
// were suppressed since the last logged one.
func (l *logLimiter) allow(remoteAddr string, code int, now time.Time) (bool, int) {
	ip, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		ip = remoteAddr
	}
	k := logKey{ip, code}
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
