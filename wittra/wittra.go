// Package wittra understands Wittra webhook payloads: who a message is from
// (Identify), when it was measured (Timestamp, ParseTime) and which values it
// carries (Values; Parse and Sources for outputs that map member by member),
// for the shapes in docs/contract.md. It is the only package that reads the
// payload format.
//
// It reads the raw bytes with a small scanner of its own rather than
// decoding into maps, so that number text is kept exactly as received and
// the per-message cost stays at a few allocations.
package wittra

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Errors returned by this package; callers test them with errors.Is.
var (
	ErrMalformed = errors.New("malformed message")      // a body or field of the wrong JSON shape
	ErrInvalidID = errors.New("invalid id")             // an id that cannot be a topic level (CheckID)
	ErrTime      = errors.New("not a Wittra timestamp") // ParseTime found no known form
)

// maxDepth bounds how deep Values walks into nested objects: deeper objects
// are published whole as JSON at their path. This also bounds path length
// (each key is at most MaxIDLen bytes) and the cost of hostile nesting.
const maxDepth = 16

// wittraPrefix starts the top-level keys of Data 2.0 messages (shape D).
var wittraPrefix = []byte("wittra-")

// Value is one measured value: its key path (keys joined by "/") and its
// payload as published (plain text for scalars, JSON for arrays and location).
type Value struct {
	Path    string
	Payload []byte
	Kind    ValueKind // what the payload was in the JSON: needed to put it back into JSON
}

// ValueKind is the JSON type a value had in the message.
type ValueKind uint8

const (
	KindNumber ValueKind = iota // number text as received
	KindString                  // the string's text, without quotes
	KindBool                    // true or false
	KindJSON                    // compact JSON of an array or object
)

// Values returns the measured values of a message body (docs/contract.md#topics), sorted by
// Path. The sources are the members of payload (when payloadType is DATA or
// absent), each top-level "wittra-*" key (Data 2.0, rooted at its own name)
// and the members of the object that binaryData decodes to (legacy). EVENT
// messages have no values.
//
// A number, string or boolean is one value (number text kept as received,
// strings without quotes); an object is walked into, except that an object
// whose only key is "value" counts as that value; an array, an object under
// the key "location" and an object nested deeper than maxDepth are one value
// holding their compact JSON. null and empty objects give nothing. A key that
// would be an unsafe topic level (see CheckID) is skipped with everything
// under it, and so is a top-level value named "data" or "event", which would
// collide with the message topics. When a path comes twice (duplicate keys),
// the last one wins, as in encoding/json.
//
// An error (wrapping ErrMalformed) means the body is not a JSON object, its
// payloadType is not a string, or binaryData is not base64 of a JSON object.
func Values(body []byte) ([]Value, error) {
	if !json.Valid(body) {
		return nil, fmt.Errorf("%w: not valid JSON", ErrMalformed)
	}
	return ValuesOfValid(body)
}

// ValuesOfValid is Values for a body already known to be valid JSON, such
// as one the webhook accepted: it skips the validation pass, about a third
// of the cost at delivery time.
func ValuesOfValid(body []byte) ([]Value, error) {
	m, ok := object(body)
	if !ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	w := walkers.Get().(*walker)
	defer w.release()

	var ptype, payload, binary []byte
	for k, v, more := m.next(); more; k, v, more = m.next() {
		k = keyText(k)
		switch string(k) {
		case "payloadType":
			ptype = v
		case "payload":
			payload = v
		case "binaryData":
			binary = v
		default:
			if bytes.HasPrefix(k, wittraPrefix) {
				w.member(k, v, 0)
			}
		}
	}
	data := true // payloadType DATA or absent
	if ptype != nil {
		s, present, ok := jsonString(ptype)
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: payloadType is %s, want a string", ErrMalformed, kind(ptype))
		case present && string(s) == "EVENT":
			return nil, nil
		}
		data = !present || string(s) == "DATA"
	}
	if pm, ok := object(payload); ok && data {
		w.members(pm, 0)
	}
	if binary != nil {
		if err := w.binary(binary); err != nil {
			return nil, err
		}
	}
	return w.result(), nil
}

type walker struct {
	path  []byte       // key path of the value being walked
	paths []byte       // paths of the values found, end to end
	pay   bytes.Buffer // payloads of the values found, end to end
	ents  []entry      // the values found
	bin   []byte       // decoded binaryData
}

// entry is one value found: its path in walker.paths, its payload in walker.pay.
type entry struct {
	path, pathEnd, pay, payEnd int
	kind                       ValueKind
}

var walkers = sync.Pool{New: func() any { return new(walker) }}

func (w *walker) release() {
	if cap(w.paths) > 64<<10 || w.pay.Cap() > 1<<20 || cap(w.bin) > 1<<20 {
		return // let an outsized walker go rather than pin its memory
	}
	w.path, w.paths, w.ents, w.bin = w.path[:0], w.paths[:0], w.ents[:0], w.bin[:0]
	w.pay.Reset()
	walkers.Put(w)
}

// binary walks the object that the binaryData value v decodes to.
func (w *walker) binary(v []byte) error {
	s, present, ok := jsonString(v)
	switch {
	case !ok:
		return fmt.Errorf("%w: binaryData is %s, want a string", ErrMalformed, kind(v))
	case !present:
		return nil
	}
	s = bytes.TrimRight(s, "=") // accept padded and unpadded base64
	enc := base64.RawStdEncoding
	w.bin = slices.Grow(w.bin[:0], enc.DecodedLen(len(s)))
	w.bin = w.bin[:enc.DecodedLen(len(s))]
	n, err := enc.Decode(w.bin, s)
	if err != nil {
		return fmt.Errorf("%w: binaryData: %w", ErrMalformed, err)
	}
	dec := w.bin[:n]
	m, ok := object(dec)
	if !ok || !json.Valid(dec) {
		return fmt.Errorf("%w: binaryData does not decode to a JSON object", ErrMalformed)
	}
	w.members(m, 0)
	return nil
}

// members walks the members of an object whose path is w.path.
func (w *walker) members(m members, depth int) {
	for k, v, more := m.next(); more; k, v, more = m.next() {
		w.member(keyText(k), v, depth)
	}
}

// member walks the value v of the (decoded) key under w.path.
func (w *walker) member(key, v []byte, depth int) {
	if !levelOK(key) {
		return
	}
	n := len(w.path)
	if n > 0 {
		w.path = append(w.path, '/')
	}
	w.path = append(w.path, key...)
	w.value(v, string(key) == "location", depth+1)
	w.path = w.path[:n]
}

// value records the raw value v found at w.path; location says it sits under
// the key "location".
func (w *walker) value(v []byte, location bool, depth int) {
	// An object whose only key is "value" counts as that value.
	for v[0] == '{' {
		m, _ := object(v)
		k, inner, more := m.next()
		if !more {
			return // empty object
		}
		if depth > maxDepth || string(keyText(k)) != "value" {
			break
		}
		if _, _, more := m.next(); more {
			break
		}
		v, depth = inner, depth+1
	}
	switch v[0] {
	case '{':
		if location || depth > maxDepth {
			w.emitJSON(v)
			return
		}
		m, _ := object(v)
		w.members(m, depth)
	case '[':
		w.emitJSON(v)
	case '"':
		if s, ok := unquote(v); ok {
			w.emit(s, KindString)
		}
	case 'n': // null
	case 't', 'f':
		w.emit(v, KindBool)
	default: // number: the text as received
		w.emit(v, KindNumber)
	}
}

func (w *walker) emit(payload []byte, kind ValueKind) {
	if w.reserved() {
		return
	}
	start := w.pay.Len()
	w.pay.Write(payload)
	w.add(start, kind)
}

func (w *walker) emitJSON(v []byte) {
	if w.reserved() {
		return
	}
	start := w.pay.Len()
	if json.Compact(&w.pay, v) == nil {
		w.add(start, KindJSON)
	}
}

// reserved reports whether w.path would collide with the message topics
// P/J/D/data and P/J/D/event.
func (w *walker) reserved() bool {
	return string(w.path) == "data" || string(w.path) == "event"
}

func (w *walker) add(payStart int, kind ValueKind) {
	start := len(w.paths)
	w.paths = append(w.paths, w.path...)
	w.ents = append(w.ents, entry{start, len(w.paths), payStart, w.pay.Len(), kind})
}

// result returns the values found, sorted by path, the last of equal paths
// kept. The values share two fresh allocations (paths, payloads) and none of
// the walker's memory.
func (w *walker) result() []Value {
	if len(w.ents) == 0 {
		return nil
	}
	slices.SortStableFunc(w.ents, func(a, b entry) int {
		return bytes.Compare(w.paths[a.path:a.pathEnd], w.paths[b.path:b.pathEnd])
	})
	paths := string(w.paths)
	pay := bytes.Clone(w.pay.Bytes())
	vals := make([]Value, 0, len(w.ents))
	for i, e := range w.ents {
		if i+1 < len(w.ents) {
			next := w.ents[i+1]
			if paths[e.path:e.pathEnd] == paths[next.path:next.pathEnd] {
				continue
			}
		}
		vals = append(vals, Value{Path: paths[e.path:e.pathEnd], Payload: pay[e.pay:e.payEnd:e.payEnd], Kind: e.kind})
	}
	return vals
}
