package wittra

import (
	"fmt"
	"unicode/utf8"
)

// MaxIDLen is the longest id, in bytes, that CheckID accepts.
const MaxIDLen = 256

// Identity is what the gateway needs to route and deduplicate one message.
type Identity struct {
	Device    string // docs/contract.md#webhook: top-level deviceId, else payload.deviceId (events), else gatewayInfo.delegatedDeviceId (legacy); "" when none
	Project   string // top-level projectId, "" when none
	PayloadID string // top-level payloadId, "" when none
	Event     bool   // payloadType == "EVENT"
}

// Identify reads the identity fields of one JSON object. body is known to be
// a syntactically valid JSON object (the caller checked). Fields that are
// present but not strings (e.g. "deviceId": 5) give an error naming the
// field; null counts as absent, and so does an empty device id. A payload or
// gatewayInfo that is not an object is ignored. payload.deviceId and
// gatewayInfo.delegatedDeviceId are only read (and checked) when no earlier
// source gave a device.
func Identify(body []byte) (Identity, error) {
	var id Identity
	m, ok := object(body)
	if !ok {
		return id, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	f := m.pick("deviceId", "projectId", "payloadId", "payloadType", "payload", "gatewayInfo")
	device, project, payloadID, ptype, payload, gatewayInfo := f[0], f[1], f[2], f[3], f[4], f[5]
	if m.bad {
		return Identity{}, fmt.Errorf("%w: bad JSON near byte %d", ErrMalformed, m.i)
	}
	var err error
	if id.Project, err = stringField("projectId", project); err != nil {
		return Identity{}, err
	}
	if id.PayloadID, err = stringField("payloadId", payloadID); err != nil {
		return Identity{}, err
	}
	if ptype != nil {
		s, _, ok := jsonString(ptype)
		if !ok {
			return Identity{}, fmt.Errorf("%w: payloadType is %s, want a string", ErrMalformed, kind(ptype))
		}
		id.Event = string(s) == "EVENT"
	}
	if id.Device, err = stringField("deviceId", device); err != nil {
		return Identity{}, err
	}
	if id.Device == "" {
		if id.Device, err = memberString(payload, "deviceId", "payload.deviceId"); err != nil {
			return Identity{}, err
		}
	}
	if id.Device == "" {
		if id.Device, err = memberString(gatewayInfo, "delegatedDeviceId", "gatewayInfo.delegatedDeviceId"); err != nil {
			return Identity{}, err
		}
	}
	return id, nil
}

// stringField reads v, the raw value of the field named field, as an
// optional string: nil (absent) and null give "".
func stringField(field string, v []byte) (string, error) {
	if v == nil {
		return "", nil
	}
	s, _, ok := jsonString(v)
	if !ok {
		return "", fmt.Errorf("%w: %s is %s, want a string", ErrMalformed, field, kind(v))
	}
	return string(s), nil
}

// memberString reads the optional string member key of obj; "" when obj is
// absent, not an object or has no such member. field names it in errors.
func memberString(obj []byte, key, field string) (string, error) {
	m, ok := object(obj)
	if !ok {
		return "", nil
	}
	found := m.pick(key)[0]
	if m.bad {
		return "", fmt.Errorf("%w: bad JSON in %s", ErrMalformed, field)
	}
	if found == nil {
		return "", nil
	}
	return stringField(field, found)
}

// kind names the JSON type of the raw value v, for error messages.
func kind(v []byte) string {
	if len(v) == 0 {
		return "empty"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a bad string"
	}
	return "a number"
}

// CheckID reports whether s can be used as a topic level: no '/', '+', '#',
// NUL; not empty; valid UTF-8; at most MaxIDLen bytes. The error wraps
// ErrInvalidID and says what is wrong; it quotes the id only when short.
func CheckID(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", ErrInvalidID)
	case len(s) > MaxIDLen:
		return fmt.Errorf("%w: %s is %d bytes long, max %d", ErrInvalidID, idName(s), len(s), MaxIDLen)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '/', '+', '#', 0:
			return fmt.Errorf("%w: %s contains %q at byte %d", ErrInvalidID, idName(s), c, i)
		}
	}
	if !utf8.ValidString(s) {
		i := 0
		for i < len(s) {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			i += n
		}
		return fmt.Errorf("%w: %s has invalid UTF-8 at byte %d", ErrInvalidID, idName(s), i)
	}
	return nil
}

// idName names s in CheckID errors: quoted when short, else by length only.
func idName(s string) string {
	if len(s) <= 64 {
		return fmt.Sprintf("id %q", s)
	}
	return "id"
}

// levelOK is CheckID as a bool, for keys on the Values hot path.
func levelOK(b []byte) bool {
	if len(b) == 0 || len(b) > MaxIDLen {
		return false
	}
	for _, c := range b {
		switch c {
		case '/', '+', '#', 0:
			return false
		}
	}
	return utf8.Valid(b)
}
