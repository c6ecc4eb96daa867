package cumulocity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// node is a decoded JSON value that keeps member order and number text, so
// that fragments and series come out in the order Wittra sent them and
// values reach Cumulocity exactly as received.
type node struct {
	kind byte   // 'o' object, 'a' array, 's' string, 'n' number, 'b' bool, 'z' null
	text string // number text, string value, "true"/"false"
	keys []string
	vals []*node // object member values (parallel to keys) or array items
}

// maxJSONDepth bounds nesting; deeper documents are refused.
const maxJSONDepth = 64

// parseJSON decodes one JSON value (and nothing after it).
func parseJSON(b []byte) (*node, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	n, err := readNode(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON value")
	}
	return n, nil
}

func readNode(dec *json.Decoder, depth int) (*node, error) {
	if depth > maxJSONDepth {
		return nil, fmt.Errorf("JSON nested deeper than %d", maxJSONDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		n := &node{kind: 'a'}
		if t == '{' {
			n.kind = 'o'
		}
		for dec.More() {
			var key string
			if n.kind == 'o' {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, _ = kt.(string)
			}
			v, err := readNode(dec, depth+1)
			if err != nil {
				return nil, err
			}
			if n.kind == 'a' {
				n.vals = append(n.vals, v)
				continue
			}
			if i := n.index(key); i >= 0 {
				n.vals[i] = v // duplicate key: the last wins, as in encoding/json
				continue
			}
			n.keys = append(n.keys, key)
			n.vals = append(n.vals, v)
		}
		if _, err := dec.Token(); err != nil { // closing delimiter
			return nil, err
		}
		return n, nil
	case string:
		return &node{kind: 's', text: t}, nil
	case json.Number:
		return &node{kind: 'n', text: t.String()}, nil
	case bool:
		return &node{kind: 'b', text: strconv.FormatBool(t)}, nil
	case nil:
		return &node{kind: 'z'}, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

func (n *node) index(key string) int {
	for i, k := range n.keys {
		if k == key {
			return i
		}
	}
	return -1
}

// get returns member key of an object, or nil.
func (n *node) get(key string) *node {
	if n == nil || n.kind != 'o' {
		return nil
	}
	if i := n.index(key); i >= 0 {
		return n.vals[i]
	}
	return nil
}

// str returns the text of a string node and whether it is one.
func (n *node) str() (string, bool) {
	if n == nil || n.kind != 's' {
		return "", false
	}
	return n.text, true
}

// unwrap returns the value an object of the single key "value" stands for
// (Data 2.0 quantities), repeatedly.
func (n *node) unwrap() *node {
	for n != nil && n.kind == 'o' && len(n.keys) == 1 && n.keys[0] == "value" {
		n = n.vals[0]
	}
	return n
}

// number returns the number text of n when it is a finite float64:
// Cumulocity stores values as float64, so larger ones cannot be sent.
func (n *node) number() (string, bool) {
	if n == nil || n.kind != 'n' {
		return "", false
	}
	if _, err := strconv.ParseFloat(n.text, 64); err != nil {
		return "", false
	}
	return n.text, true
}

// without returns a copy of object n without the listed members.
func (n *node) without(keys ...string) *node {
	out := &node{kind: 'o'}
	for i, k := range n.keys {
		drop := false
		for _, d := range keys {
			if k == d {
				drop = true
				break
			}
		}
		if !drop {
			out.keys = append(out.keys, k)
			out.vals = append(out.vals, n.vals[i])
		}
	}
	return out
}

// appendJSON appends n as compact JSON.
func (n *node) appendJSON(b []byte) []byte {
	switch n.kind {
	case 'o':
		b = append(b, '{')
		for i, k := range n.keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendQuoted(b, k)
			b = append(b, ':')
			b = n.vals[i].appendJSON(b)
		}
		return append(b, '}')
	case 'a':
		b = append(b, '[')
		for i, v := range n.vals {
			if i > 0 {
				b = append(b, ',')
			}
			b = v.appendJSON(b)
		}
		return append(b, ']')
	case 's':
		return appendQuoted(b, n.text)
	case 'z':
		return append(b, "null"...)
	}
	return append(b, n.text...)
}

// appendQuoted appends s as a JSON string, leaving <, > and & as they are.
func appendQuoted(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...)
}
