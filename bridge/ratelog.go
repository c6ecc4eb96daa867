package bridge

import (
	"net"
	"time"

	"wittra-gateway/internal/ratelog"
)

// logLimiter lets one refusal per (address, code, reason) through per
// interval and counts the rest, so a misconfigured portal or a scanner
// cannot flood the journal.
type logLimiter struct{ lim *ratelog.Limiter[logKey] }

type logKey struct {
	ip     string
	code   int
	reason string // the refusal's text with digits folded: a second, different 400 is not hidden
}

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{ratelog.New[logKey](interval)}
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
	return l.lim.Allow(logKey{ip, code, ratelog.Fold(reason)}, now)
}
