package wittraapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Device is what the gateway keeps of one element of the API's device
// list: the rest (latest data, lastSeen, configuration) is not needed for
// names and is not stored.
type Device struct {
	ID   string `json:"id"`             // deviceId, as Wittra spells it
	Name string `json:"name,omitempty"` // "" when null, absent or not a string
	Type string `json:"type,omitempty"` // deviceType; "" when absent
}

// Limits of what one answer may hold, so that a broken or hostile answer
// cannot grow the gateway's memory or its queue file.
const (
	// MaxBody is the largest device-list answer read (bytes). A device
	// element with latest data is well under 2 KiB, so this is room for
	// several thousand devices.
	MaxBody = 8 << 20
	// MaxDevicesPerProject bounds the devices kept of one project.
	MaxDevicesPerProject = 10000
	// maxNameLen and maxTypeLen clip what is kept (bytes, on a rune boundary).
	maxNameLen = 128
	maxTypeLen = 64
	maxIDLen   = 256
)

// errNotArray is the answer being something else than a JSON array.
var errNotArray = errors.New("device list is not a JSON array")

// element is one device of the list as read: every field raw, so that a
// field of an unexpected type is ignored instead of failing the list.
type element struct {
	DeviceID   json.RawMessage `json:"deviceId"`
	Name       json.RawMessage `json:"name"`
	DeviceType json.RawMessage `json:"deviceType"`
}

// parseDevices reads the answer to GET .../devices leniently: the body must
// be a JSON array; unknown fields are ignored; an element that is not an
// object or has no string deviceId is skipped (counted in skipped); a name
// or deviceType that is null or not a string is taken as absent. Later
// duplicates of a deviceId win.
func parseDevices(body []byte) (devs []Device, skipped int, err error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '[' {
		return nil, 0, errNotArray
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, 0, fmt.Errorf("device list: %w", err)
	}
	seen := make(map[string]int, len(raw))
	for _, r := range raw {
		var e element
		if len(r) == 0 || r[0] != '{' || json.Unmarshal(r, &e) != nil {
			skipped++
			continue
		}
		id, ok := str(e.DeviceID)
		id = strings.TrimSpace(id)
		if !ok || id == "" || len(id) > maxIDLen {
			skipped++
			continue
		}
		name, _ := str(e.Name)
		typ, _ := str(e.DeviceType)
		d := Device{ID: id, Name: clip(strings.TrimSpace(name), maxNameLen), Type: clip(strings.TrimSpace(typ), maxTypeLen)}
		if i, dup := seen[id]; dup {
			devs[i] = d
			continue
		}
		if len(devs) >= MaxDevicesPerProject {
			skipped++
			continue
		}
		seen[id] = len(devs)
		devs = append(devs, d)
	}
	return devs, skipped, nil
}

// str decodes a JSON string; ok is false for null, absent or another type.
func str(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// clip shortens s to at most n bytes without cutting a rune, and drops
// control characters (a name ends up in CSV lines and tables).
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}
