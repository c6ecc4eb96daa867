// Package wmsg builds the Wittra-shaped messages the load generator posts
// and reads them back on the subscriber side.
//
// Each message carries everything needed to check delivery without any
// shared state between sender and subscriber:
//
//   - payloadId = 11 base62 digits of a bijective scramble of the sequence
//     number, "-", the 8-character run id (20 characters, like the portal's
//     ids, and in random key order like them, so the gateway's dedup index
//     sees realistic inserts);
//   - timestamp = the send time, RFC 3339 with nanoseconds (a Wittra form
//     the gateway parses), read back for end-to-end latency.
package wmsg

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Shapes of message body.
const (
	ShapeSmall = "small" // ~290 bytes: temperature and battery
	ShapeFull  = "full"  // ~650 bytes: the f1 fixture shape (location, neighbors, usage, accelerometer)
)

// scramble constants: an odd multiplier and its inverse modulo 2^64.
const (
	mulK    uint64 = 0x9E3779B97F4A7C15
	mulKInv uint64 = 0xF1DE83E19937733D
)

// TimeLayout is the timestamp layout: always 9 fraction digits.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

const b62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// RunIDLen is the length of a run id.
const RunIDLen = 8

// NewRunID returns a run id derived from t (8 base36 characters).
func NewRunID(t time.Time) string {
	s := strconv.FormatUint(uint64(t.UnixNano())*mulK>>20, 36)
	for len(s) < RunIDLen {
		s = "0" + s
	}
	return s[len(s)-RunIDLen:]
}

// CheckRunID reports whether id is usable as a run id.
func CheckRunID(id string) error {
	if len(id) != RunIDLen {
		return fmt.Errorf("run id %q: want %d characters", id, RunIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return fmt.Errorf("run id %q: letters and digits only", id)
		}
	}
	return nil
}

// AppendPayloadID appends the payloadId of seq in run.
func AppendPayloadID(dst []byte, seq uint64, run string) []byte {
	x := seq * mulK
	var d [11]byte
	for i := 10; i >= 0; i-- {
		d[i] = b62[x%62]
		x /= 62
	}
	dst = append(dst, d[:]...)
	dst = append(dst, '-')
	return append(dst, run...)
}

// ParsePayloadID returns the sequence and run of a payloadId.
func ParsePayloadID(id []byte) (seq uint64, run []byte, ok bool) {
	if len(id) != 12+RunIDLen || id[11] != '-' {
		return 0, nil, false
	}
	var x uint64
	for _, c := range id[:11] {
		var v uint64
		switch {
		case c >= '0' && c <= '9':
			v = uint64(c - '0')
		case c >= 'A' && c <= 'Z':
			v = uint64(c-'A') + 10
		case c >= 'a' && c <= 'z':
			v = uint64(c-'a') + 36
		default:
			return 0, nil, false
		}
		x = x*62 + v
	}
	return x * mulKInv, id[12:], true
}

// DeviceID is the id of device number i: D00124B + 10 hex digits.
func DeviceID(dst []byte, i int) []byte {
	dst = append(dst, "D00124B"...)
	h := strconv.FormatUint(uint64(i), 16)
	for n := len(h); n < 10; n++ {
		dst = append(dst, '0')
	}
	return append(dst, h...)
}

// Spec says what to build.
type Spec struct {
	Run     string
	Project string // "" = no projectId (the route's project applies)
	Devices int    // distinct devices, ≥ 1
	// DeviceBase is the number of the first device: runs with disjoint
	// ranges share no device (so per-device order cannot tie them).
	DeviceBase int
	Shape      string // ShapeSmall (default) or ShapeFull
}

// Append appends message seq, sent at t, to dst.
func (s *Spec) Append(dst []byte, seq uint64, t time.Time) []byte {
	dev := s.DeviceBase + int(seq%uint64(max(1, s.Devices)))
	dst = append(dst, `{"deviceId":"`...)
	dst = DeviceID(dst, dev)
	dst = append(dst, `","gatewayId":"G00124B0012345678AB"`...)
	if s.Project != "" {
		dst = append(dst, `,"projectId":"`...)
		dst = append(dst, s.Project...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"payloadId":"`...)
	dst = AppendPayloadID(dst, seq, s.Run)
	dst = append(dst, `","payloadType":"DATA","source":"p","timestamp":"`...)
	dst = t.UTC().AppendFormat(dst, TimeLayout)
	// Values vary a little with the sequence so retained values change.
	temp := 18 + int(seq%700)/100
	frac := int(seq % 100)
	dst = append(dst, `","payload":{"temperature":`...)
	dst = strconv.AppendInt(dst, int64(temp), 10)
	dst = append(dst, '.')
	if frac < 10 {
		dst = append(dst, '0')
	}
	dst = strconv.AppendInt(dst, int64(frac), 10)
	dst = append(dst, `,"battery":{"chargingStatus":"NOT_PLUGGED","percentage":`...)
	dst = strconv.AppendInt(dst, int64(40+seq%60), 10)
	dst = append(dst, `,"voltage":3.92}`...)
	if s.Shape == ShapeFull {
		dst = append(dst, `,"location":{"latitude":59.33258,"longitude":18.06491,"accuracy":0.8,"level":2,"height":1.1,"label":"Hall B"}`...)
		dst = append(dst, `,"neighbors":[{"id":"D00124B001E2C0FFE","rssi":-67},{"id":"D00124B001E2BEEF1","rssi":-81}]`...)
		dst = append(dst, `,"usage":{"moving":42,"stationary":258},"accelerometer":{"x":0.01,"y":-0.02,"z":0.99}`...)
	}
	return append(dst, `}}`...)
}

// AppendBody appends one request body: a single object when n is 1, else
// a JSON array of messages first..first+n-1.
func (s *Spec) AppendBody(dst []byte, first uint64, n int, t time.Time) []byte {
	if n == 1 {
		return s.Append(dst, first, t)
	}
	dst = append(dst, '[')
	for i := 0; i < n; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = s.Append(dst, first+uint64(i), t)
	}
	return append(dst, ']')
}

var (
	keyPayloadID = []byte(`"payloadId":"`)
	keyTimestamp = []byte(`"timestamp":"`)
)

// ErrNotOurs is returned by Parse for a body that is not a load message.
var ErrNotOurs = errors.New("not a load-generator message")

// Parsed is what a subscriber reads back from a body.
type Parsed struct {
	Seq  uint64
	Run  []byte // aliases the body
	Sent time.Time
}

// Parse reads the payloadId and send time of a message body.
func Parse(body []byte) (Parsed, error) {
	var p Parsed
	id := field(body, keyPayloadID)
	if id == nil {
		return p, ErrNotOurs
	}
	var ok bool
	if p.Seq, p.Run, ok = ParsePayloadID(id); !ok {
		return p, ErrNotOurs
	}
	ts := field(body, keyTimestamp)
	if ts == nil {
		return p, ErrNotOurs
	}
	t, err := parseTime(ts)
	if err != nil {
		return p, fmt.Errorf("%w: timestamp: %v", ErrNotOurs, err)
	}
	p.Sent = t
	return p, nil
}

// field returns the string value after key, up to the next quote.
func field(body, key []byte) []byte {
	i := bytes.Index(body, key)
	if i < 0 {
		return nil
	}
	v := body[i+len(key):]
	j := bytes.IndexByte(v, '"')
	if j < 0 {
		return nil
	}
	return v[:j]
}

// parseTime parses TimeLayout quickly (fixed width, UTC "Z"), falling back
// to time.Parse for anything else.
func parseTime(b []byte) (time.Time, error) {
	// 2006-01-02T15:04:05.000000000Z
	if len(b) == 30 && b[4] == '-' && b[7] == '-' && b[10] == 'T' && b[13] == ':' && b[16] == ':' && b[19] == '.' && b[29] == 'Z' {
		n := func(from, to int) (int, bool) {
			v := 0
			for _, c := range b[from:to] {
				if c < '0' || c > '9' {
					return 0, false
				}
				v = v*10 + int(c-'0')
			}
			return v, true
		}
		y, ok1 := n(0, 4)
		mo, ok2 := n(5, 7)
		d, ok3 := n(8, 10)
		h, ok4 := n(11, 13)
		mi, ok5 := n(14, 16)
		s, ok6 := n(17, 19)
		ns, ok7 := n(20, 29)
		if ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7 {
			return time.Date(y, time.Month(mo), d, h, mi, s, ns, time.UTC), nil
		}
	}
	return time.Parse(time.RFC3339Nano, string(b))
}
