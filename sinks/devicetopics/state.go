package devicetopics

import (
	"encoding/json"
	"time"

	"wittra-gateway/sinks"
	"wittra-gateway/wittra"
)

// stateJSON renders the state topic of d:
//
//	{"project":"P","device":"D","name":"Freezer 2","type":"tag",
//	 "time":"<newest message time>",
//	 "values":{"battery/percentage":{"value":75,"time":"<its message's time>"},…}}
//
// name and type are null when unknown, a time is null when the message had
// none the gateway could trust. Values keep their JSON type; one above
// maxValueBytes is left out.
func stateJSON(d *device, info sinks.DeviceInfo) []byte {
	b := make([]byte, 0, 128+48*len(d.keys))
	b = append(b, `{"project":`...)
	b = appendJSONString(b, d.key.project)
	b = append(b, `,"device":`...)
	b = appendJSONString(b, d.key.device)
	b = append(b, `,"name":`...)
	b = appendOptString(b, info.Name)
	b = append(b, `,"type":`...)
	b = appendOptString(b, info.Type)
	b = append(b, `,"time":`...)
	b = appendTime(b, d.last)
	b = append(b, `,"values":{`...)
	first := true
	for i := range d.keys {
		k := &d.keys[i]
		if k.big {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, k.path)
		b = append(b, `:{"value":`...)
		switch k.kind {
		case wittra.KindString:
			b = appendJSONString(b, k.value)
		default: // number text, true/false and compact JSON are JSON already
			b = append(b, k.value...)
		}
		b = append(b, `,"time":`...)
		b = appendTime(b, k.time)
		b = append(b, '}')
	}
	return append(b, "}}"...)
}

func appendOptString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, s)
}

// appendJSONString appends s as a JSON string (strconv.Quote is not JSON
// for every rune, encoding/json is).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	// Plain ASCII (key paths, ids, numbers as text): no escaping needed.
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}
