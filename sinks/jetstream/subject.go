package jetstream

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"wittra-gateway/sinks"
)

// EscapeToken turns a project or device id into one NATS subject token.
// The gateway accepts ids that are safe MQTT topic levels (no / + # NUL,
// valid UTF-8, at most 256 bytes); NATS has other metacharacters. Every
// byte that NATS gives a meaning to or that breaks its protocol line — '.',
// '*', '>', space and the other ASCII control characters, DEL — and '%'
// itself becomes %XX (two upper-case hex digits); everything else,
// non-ASCII UTF-8 included, is kept. The mapping is one-to-one and undone
// by URL percent-decoding: "tag.7" → "tag%2E7", "50%" → "50%25".
func EscapeToken(id string) string {
	n := 0
	for i := 0; i < len(id); i++ {
		if needsEscape(id[i]) {
			n++
		}
	}
	if n == 0 {
		return id
	}
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(id) + 2*n)
	for i := 0; i < len(id); i++ {
		c := id[i]
		if needsEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xF])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func needsEscape(c byte) bool {
	return c <= ' ' || c == 0x7F || c == '.' || c == '*' || c == '>' || c == '%'
}

// Subject is the subject of m under prefix:
// <prefix>.<project>.<device>.data or .event, ids escaped by EscapeToken.
func Subject(prefix string, m sinks.Message) string {
	return prefix + "." + EscapeToken(m.Project) + "." + EscapeToken(m.Device) + "." + m.Kind.String()
}

// maxMsgIDLen bounds a Nats-Msg-Id taken verbatim; longer ids are hashed.
const maxMsgIDLen = 128

// MsgID is the Nats-Msg-Id of m, which the stream deduplicates on: the
// body's payloadId when it has one, else the gateway's own id of the
// message, "wittra-gw:<gateway id>:<queue seq>:<receive time, Unix ns>"
// (stable across restarts: both come from the queue record). An id that
// is longer than 128 bytes or holds a control character (it could not be a
// header value) becomes "sha256:<64 hex digits>" of itself: still the same
// for every delivery of the message.
func MsgID(gatewayID, payloadID string, m sinks.Message) string {
	id := payloadID
	if id == "" {
		id = "wittra-gw:" + gatewayID + ":" + strconv.FormatUint(m.Seq, 10) + ":" + strconv.FormatInt(m.Received.UnixNano(), 10)
	}
	if headerSafe(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// headerSafe reports whether s can be a header value as it is.
func headerSafe(s string) bool {
	if len(s) > maxMsgIDLen || s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7F {
			return false
		}
	}
	// Leading or trailing blanks would be trimmed by header parsing.
	return s[0] != ' ' && s[len(s)-1] != ' '
}
