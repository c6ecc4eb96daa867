package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"wittra-gateway/buffer"
	"wittra-gateway/sinks"
)

// The queue stores opaque records; the bridge's record is a small envelope
// around the body exactly as received:
//
//	version(1)=1 | kind(1) | uvarint len + project | uvarint len + device | body
//
// Project and device are resolved once, at intake, so a later change of a
// route's project cannot re-home messages already accepted.
const envelopeVersion = 1

func appendEnvelope(dst []byte, kind sinks.Kind, project, device string, body []byte) []byte {
	dst = append(dst, envelopeVersion, byte(kind))
	dst = binary.AppendUvarint(dst, uint64(len(project)))
	dst = append(dst, project...)
	dst = binary.AppendUvarint(dst, uint64(len(device)))
	dst = append(dst, device...)
	return append(dst, body...)
}

var errEnvelope = errors.New("bad envelope")

// DecodeRecord turns a queue record into a sink message. The body aliases
// rec.Data.
func DecodeRecord(rec buffer.Record) (sinks.Message, error) {
	m, bad := decodeEnvelope(rec.Data, func(b []byte) string { return string(b) })
	m.Seq, m.Received, m.ReceivedUnsure = rec.Seq, rec.Time, rec.TimeUnsure
	if bad != "" {
		return m, fmt.Errorf("record %d: %w: %s", rec.Seq, errEnvelope, bad)
	}
	return m, nil
}

// decodeView is DecodeRecord for a look that ends before data changes:
// project and device alias data instead of being copied.
func decodeView(d []byte) (sinks.Message, error) {
	m, bad := decodeEnvelope(d, func(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) })
	if bad != "" {
		return m, errEnvelope
	}
	return m, nil
}

// decodeEnvelope reads an envelope; str makes the project and device
// strings (a copy or a view). It names the part that is bad, if any.
func decodeEnvelope(d []byte, str func([]byte) string) (m sinks.Message, bad string) {
	if len(d) < 2 || d[0] != envelopeVersion || d[1] > byte(sinks.KindEvent) {
		return m, "header"
	}
	m.Kind = sinks.Kind(d[1])
	d = d[2:]
	var ok bool
	if m.Project, d, ok = envelopeString(d, str); !ok {
		return m, "project"
	}
	if m.Device, d, ok = envelopeString(d, str); !ok {
		return m, "device"
	}
	m.Body = d
	return m, ""
}

func envelopeString(d []byte, str func([]byte) string) (string, []byte, bool) {
	n, w := binary.Uvarint(d)
	if w <= 0 || uint64(len(d)-w) < n {
		return "", nil, false
	}
	return str(d[w : w+int(n)]), d[w+int(n):], true
}
