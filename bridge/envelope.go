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
	m := sinks.Message{Seq: rec.Seq, Received: rec.Time, ReceivedUnsure: rec.TimeUnsure}
	d := rec.Data
	if len(d) < 2 || d[0] != envelopeVersion || d[1] > byte(sinks.KindEvent) {
		return m, fmt.Errorf("record %d: %w: header", rec.Seq, errEnvelope)
	}
	m.Kind = sinks.Kind(d[1])
	d = d[2:]
	var ok bool
	if m.Project, d, ok = readString(d); !ok {
		return m, fmt.Errorf("record %d: %w: project", rec.Seq, errEnvelope)
	}
	if m.Device, d, ok = readString(d); !ok {
		return m, fmt.Errorf("record %d: %w: device", rec.Seq, errEnvelope)
	}
	m.Body = d
	return m, nil
}

func readString(d []byte) (string, []byte, bool) {
	n, w := binary.Uvarint(d)
	if w <= 0 || uint64(len(d)-w) < n {
		return "", nil, false
	}
	return string(d[w : w+int(n)]), d[w+int(n):], true
}

// decodeView is DecodeRecord for a look that ends before data changes:
// project and device alias data instead of being copied.
func decodeView(d []byte) (sinks.Message, error) {
	var m sinks.Message
	if len(d) < 2 || d[0] != envelopeVersion || d[1] > byte(sinks.KindEvent) {
		return m, errEnvelope
	}
	m.Kind = sinks.Kind(d[1])
	d = d[2:]
	var ok bool
	if m.Project, d, ok = viewString(d); !ok {
		return m, errEnvelope
	}
	if m.Device, d, ok = viewString(d); !ok {
		return m, errEnvelope
	}
	m.Body = d
	return m, nil
}

func viewString(d []byte) (string, []byte, bool) {
	n, w := binary.Uvarint(d)
	if w <= 0 || uint64(len(d)-w) < n {
		return "", nil, false
	}
	return unsafe.String(unsafe.SliceData(d[w:]), int(n)), d[w+int(n):], true
}
