package wittra_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"wittra-gateway/wittra"
)

// The fuzz targets compare the package's scanner against reference versions
// of the same rules written the obvious way, on encoding/json maps. Maps
// cannot say what duplicate keys did, so inputs with any are only checked
// for invariants.

func addSeeds(f *testing.F) {
	for _, name := range fixtures {
		f.Add(fixture(f, name))
	}
	for _, s := range []string{
		`{"payload":{"a":{"value":1.50},"location":{"value":{"x":1}},"n":[1,[2]],"s":"\u00e9\/"}}`,
		`{"wittra-a":{"b":{"value":true}},"payloadType":"DATA","binaryData":"eyJiYiI6NH0"}`,
		`{"payloadType":"EVENT","payload":{"deviceId":"D1"}}`,
		`{"deviceId":null,"payload":{"deviceId":""},"gatewayInfo":{"delegatedDeviceId":"G"}}`,
		`{"payload":{"a":1,"a":{"b":2}}}`,
	} {
		f.Add([]byte(s))
	}
}

func FuzzValues(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		wittra.Timestamp(body) // any input: must not panic
		vals, err := wittra.Values(body)
		want, refErr, comparable := refValues(body)
		if comparable && (err == nil) != (refErr == nil) {
			t.Fatalf("Values error %v, reference error %v", err, refErr)
		}
		if err != nil {
			return
		}
		for i, v := range vals {
			if i > 0 && vals[i-1].Path >= v.Path {
				t.Errorf("paths not sorted and unique: %q then %q", vals[i-1].Path, v.Path)
			}
			if v.Path == "data" || v.Path == "event" {
				t.Errorf("reserved path %q", v.Path)
			}
			for level := range strings.SplitSeq(v.Path, "/") {
				if err := wittra.CheckID(level); err != nil {
					t.Errorf("path %q: %v", v.Path, err)
				}
			}
		}
		if comparable {
			if got := lines(vals); !slices.Equal(got, want) {
				t.Errorf("got %q, want %q (reference)", got, want)
			}
		}
	})
}

func FuzzIdentify(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) || !bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{")) {
			return
		}
		got, err := wittra.Identify(body)
		if hasDupKeys(body) {
			return
		}
		want, wantErr := refIdentify(body)
		if (err != nil) != wantErr {
			t.Fatalf("Identify error %v, reference error %v", err, wantErr)
		}
		if err == nil && got != want {
			t.Errorf("got %+v, want %+v (reference)", got, want)
		}
	})
}

// refValues applies the Values rules with encoding/json maps. comparable is
// false when the body (or its binaryData) has duplicate keys.
func refValues(body []byte) (lines []string, err error, comparable bool) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, errRef, true
	}
	if hasDupKeys(body) {
		return nil, nil, false
	}
	out := map[string]string{}
	data := true
	if raw, ok := top["payloadType"]; ok {
		var p *string
		if json.Unmarshal(raw, &p) != nil {
			return nil, errRef, true
		}
		if p != nil && *p == "EVENT" {
			return []string{}, nil, true
		}
		data = p == nil || *p == "DATA"
	}
	for k, v := range top {
		if strings.HasPrefix(k, "wittra-") {
			refMember(out, "", k, v, 0)
		}
	}
	if raw, ok := top["payload"]; ok && data {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) == nil {
			for k, v := range m {
				refMember(out, "", k, v, 0)
			}
		}
	}
	if raw, ok := top["binaryData"]; ok {
		var s *string
		if json.Unmarshal(raw, &s) != nil {
			return nil, errRef, true
		}
		if s != nil {
			dec, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(*s, "="))
			if err != nil {
				return nil, errRef, true
			}
			var m map[string]json.RawMessage
			if json.Unmarshal(dec, &m) != nil || m == nil {
				return nil, errRef, true
			}
			if hasDupKeys(dec) {
				return nil, nil, false
			}
			for k, v := range m {
				refMember(out, "", k, v, 0)
			}
		}
	}
	lines = []string{}
	for _, p := range slices.Sorted(maps.Keys(out)) {
		lines = append(lines, p+"="+out[p])
	}
	return lines, nil, true
}

var errRef = bytes.ErrTooLarge // any non-nil error: only its presence is compared

const refMaxDepth = 16

func refMember(out map[string]string, prefix, key string, v json.RawMessage, depth int) {
	if key == "" || len(key) > wittra.MaxIDLen || strings.ContainsAny(key, "/+#\x00") || !utf8.ValidString(key) {
		return
	}
	path := key
	if prefix != "" {
		path = prefix + "/" + key
	}
	refValue(out, path, key == "location", v, depth+1)
}

func refValue(out map[string]string, path string, location bool, v json.RawMessage, depth int) {
	v = bytes.TrimSpace(v)
	for v[0] == '{' {
		var m map[string]json.RawMessage
		json.Unmarshal(v, &m)
		if len(m) == 0 {
			return
		}
		inner, ok := m["value"]
		if depth > refMaxDepth || !ok || len(m) != 1 {
			break
		}
		v, depth = bytes.TrimSpace(inner), depth+1
	}
	reserved := path == "data" || path == "event"
	switch v[0] {
	case '{':
		if location || depth > refMaxDepth {
			if !reserved {
				var b bytes.Buffer
				json.Compact(&b, v)
				out[path] = b.String()
			}
			return
		}
		var m map[string]json.RawMessage
		json.Unmarshal(v, &m)
		for k, e := range m {
			refMember(out, path, k, e, depth)
		}
	case '[':
		if !reserved {
			var b bytes.Buffer
			json.Compact(&b, v)
			out[path] = b.String()
		}
	case '"':
		var s string
		json.Unmarshal(v, &s)
		if !reserved {
			out[path] = s
		}
	case 'n':
	default:
		if !reserved {
			out[path] = string(v)
		}
	}
}

// refIdentify applies the Identify rules with encoding/json maps; bad says
// Identify should fail.
func refIdentify(body []byte) (id wittra.Identity, bad bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return id, true
	}
	str := func(raw json.RawMessage) (string, bool) {
		var p *string
		if raw == nil {
			return "", true
		}
		if json.Unmarshal(raw, &p) != nil {
			return "", false
		}
		if p == nil {
			return "", true
		}
		return *p, true
	}
	member := func(obj json.RawMessage, key string) (string, bool) {
		var m map[string]json.RawMessage
		if json.Unmarshal(obj, &m) != nil {
			return "", true // not an object: ignored
		}
		return str(m[key])
	}
	var ok bool
	var typ string
	if id.Project, ok = str(top["projectId"]); !ok {
		return id, true
	}
	if id.PayloadID, ok = str(top["payloadId"]); !ok {
		return id, true
	}
	if typ, ok = str(top["payloadType"]); !ok {
		return id, true
	}
	id.Event = typ == "EVENT"
	if id.Device, ok = str(top["deviceId"]); !ok {
		return id, true
	}
	if id.Device == "" && top["payload"] != nil {
		if id.Device, ok = member(top["payload"], "deviceId"); !ok {
			return id, true
		}
	}
	if id.Device == "" && top["gatewayInfo"] != nil {
		if id.Device, ok = member(top["gatewayInfo"], "delegatedDeviceId"); !ok {
			return id, true
		}
	}
	return id, false
}

// hasDupKeys reports whether any object in the JSON text data repeats a key
// (after decoding escapes).
func hasDupKeys(data []byte) bool {
	type frame struct {
		keys    map[string]bool // nil for arrays
		wantKey bool
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.keys != nil {
			if top.wantKey {
				k := tok.(string)
				if top.keys[k] {
					return true
				}
				top.keys[k], top.wantKey = true, false
				continue
			}
			top.wantKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		}
	}
}

// benchRead times read over the F1 fixture, failing on its first error.
func benchRead(b *testing.B, read func(body []byte) error) {
	body := fixture(b, "f1_data_tag.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := read(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIdentify(b *testing.B) {
	benchRead(b, func(body []byte) error { _, err := wittra.Identify(body); return err })
}

func BenchmarkValues(b *testing.B) {
	benchRead(b, func(body []byte) error { _, err := wittra.Values(body); return err })
}

func BenchmarkTimestamp(b *testing.B) {
	benchRead(b, func(body []byte) error {
		if _, ok := wittra.Timestamp(body); !ok {
			return errors.New("no timestamp")
		}
		return nil
	})
}
