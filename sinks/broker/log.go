package broker

import (
	"context"
	"errors"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mochiHandler sits between mochi's slog logger and zerolog:
//   - mochi logs only lifecycle events at info (hook added, listener
//     attached, started, stopped); they are demoted to debug, so the
//     gateway's start line is the first thing an operator reads;
//   - its TCP listener logs every connection that ends with an error (EOF
//     from a client that just went away, a refused login, a keepalive
//     timeout) as a warning with an empty message. Those are per-connection
//     noise: they are demoted to debug and given a message. Refused logins
//     are logged by the auth hook at info instead.
//   - a refused publish makes mochi log "error processing packet" with the
//     error "not authorized" and no user or topic; the auth hook has logged
//     it with both (rate-limited), so this line is demoted to debug;
//   - some records carry whole packets ("pk", "packet", "will"), which can
//     hold payloads or a CONNECT password; those attributes are dropped so
//     that secrets never reach the log.
//
// mochi drops a QoS>0 message for a client whose Inflight is full with no
// hook, only this warning per message; it is counted per client through
// quotaDropped instead of logged (the count is logged once a minute).
type mochiHandler struct {
	next         slog.Handler
	quotaDropped func(client string)
}

func newMochiHandler(next slog.Handler) *mochiHandler { return &mochiHandler{next: next} }

func (h *mochiHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// mochiQuotaMsg is mochi's (v2.7.9) warning for a message dropped because
// the client's Inflight was full.
const mochiQuotaMsg = "client store quota reached"

func (h *mochiHandler) Handle(ctx context.Context, r slog.Record) error {
	level, msg := r.Level, r.Message
	if msg == mochiQuotaMsg && h.quotaDropped != nil {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "client" {
				h.quotaDropped(a.Value.String())
				return false
			}
			return true
		})
		return nil
	}
	if level > slog.LevelDebug && msg == "error processing packet" && notAuthorized(r) {
		level = slog.LevelDebug
		if !h.next.Enabled(ctx, level) {
			return nil
		}
	}
	if level == slog.LevelInfo {
		// Lifecycle lines (hook added, listener attached, started): the
		// gateway's own start line names the listeners; these are for
		// debugging the broker.
		level = slog.LevelDebug
		if !h.next.Enabled(ctx, level) {
			return nil
		}
	}
	if msg == "" {
		msg = "client connection ended"
		if level > slog.LevelDebug && level < slog.LevelError {
			level = slog.LevelDebug
		}
		if !h.next.Enabled(ctx, level) {
			return nil
		}
	}
	out := slog.NewRecord(r.Time, level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if !redacted(a.Key) {
			out.AddAttrs(a)
		}
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *mochiHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	keep := make([]slog.Attr, 0, len(attrs))
	for _, a := range attrs {
		if !redacted(a.Key) {
			keep = append(keep, a)
		}
	}
	return &mochiHandler{next: h.next.WithAttrs(keep), quotaDropped: h.quotaDropped}
}

func (h *mochiHandler) WithGroup(name string) slog.Handler {
	return &mochiHandler{next: h.next.WithGroup(name), quotaDropped: h.quotaDropped}
}

// notAuthorized reports whether r's error is mochi's "not authorized".
func notAuthorized(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			err, _ := a.Value.Any().(error)
			found = errors.Is(err, packets.ErrNotAuthorized)
			return false
		}
		return true
	})
	return found
}

func redacted(key string) bool {
	switch key {
	case "pk", "packet", "will":
		return true
	}
	return false
}
