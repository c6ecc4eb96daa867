package wittra

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Node is a decoded JSON value that keeps member order and number text, for
// outputs that map a message member by member (Cumulocity) and must send
// values exactly as received, in the order Wittra sent them. Values is the
// cheaper reader for outputs that only need the value topics.
type Node struct {
	Kind byte   // 'o' object, 'a' array, 's' string, 'n' number, 'b' bool, 'z' null
	Text string // number text, string value, "true"/"false"
	Keys []string
	Vals []*Node // object member values (parallel to Keys) or array items
}

// maxTreeDepth bounds nesting; deeper documents are refused.
const maxTreeDepth = 64

// Parse decodes one JSON value (and nothing after it). When a key comes
// twice in an object the last one wins, as in encoding/json.
func Parse(b []byte) (*Node, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	n, err := readNode(dec, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: trailing data after the JSON value", ErrMalformed)
	}
	return n, nil
}

func readNode(dec *json.Decoder, depth int) (*Node, error) {
	if depth > maxTreeDepth {
		return nil, fmt.Errorf("JSON nested deeper than %d", maxTreeDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		n := &Node{Kind: 'a'}
		if t == '{' {
			n.Kind = 'o'
		}
		for dec.More() {
			var key string
			if n.Kind == 'o' {
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
			if n.Kind == 'a' {
				n.Vals = append(n.Vals, v)
				continue
			}
			if i := n.index(key); i >= 0 {
				n.Vals[i] = v
				continue
			}
			n.Keys = append(n.Keys, key)
			n.Vals = append(n.Vals, v)
		}
		if _, err := dec.Token(); err != nil { // closing delimiter
			return nil, err
		}
		return n, nil
	case string:
		return &Node{Kind: 's', Text: t}, nil
	case json.Number:
		return &Node{Kind: 'n', Text: t.String()}, nil
	case bool:
		return &Node{Kind: 'b', Text: strconv.FormatBool(t)}, nil
	case nil:
		return &Node{Kind: 'z'}, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

func (n *Node) index(key string) int {
	for i, k := range n.Keys {
		if k == key {
			return i
		}
	}
	return -1
}

// Get returns member key of an object, or nil (also on a nil or non-object n).
func (n *Node) Get(key string) *Node {
	if n == nil || n.Kind != 'o' {
		return nil
	}
	if i := n.index(key); i >= 0 {
		return n.Vals[i]
	}
	return nil
}

// Str returns the text of a string node and whether it is one.
func (n *Node) Str() (string, bool) {
	if n == nil || n.Kind != 's' {
		return "", false
	}
	return n.Text, true
}

// Unwrap returns the value an object of the single key "value" stands for
// (Data 2.0 quantities), repeatedly: the same rule as Values.
func (n *Node) Unwrap() *Node {
	for n != nil && n.Kind == 'o' && len(n.Keys) == 1 && n.Keys[0] == "value" {
		n = n.Vals[0]
	}
	return n
}

// Without returns a copy of object n without the listed members.
func (n *Node) Without(keys ...string) *Node {
	out := &Node{Kind: 'o'}
	for i, k := range n.Keys {
		drop := false
		for _, d := range keys {
			if k == d {
				drop = true
				break
			}
		}
		if !drop {
			out.Keys = append(out.Keys, k)
			out.Vals = append(out.Vals, n.Vals[i])
		}
	}
	return out
}

// AppendJSON appends n as compact JSON, leaving <, > and & unescaped.
func (n *Node) AppendJSON(b []byte) []byte {
	switch n.Kind {
	case 'o':
		b = append(b, '{')
		for i, k := range n.Keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendQuoted(b, k)
			b = append(b, ':')
			b = n.Vals[i].AppendJSON(b)
		}
		return append(b, '}')
	case 'a':
		b = append(b, '[')
		for i, v := range n.Vals {
			if i > 0 {
				b = append(b, ',')
			}
			b = v.AppendJSON(b)
		}
		return append(b, ']')
	case 's':
		return AppendQuoted(b, n.Text)
	case 'z':
		return append(b, "null"...)
	}
	return append(b, n.Text...)
}

// AppendQuoted appends s as a JSON string, leaving <, > and & as they are.
func AppendQuoted(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...)
}

// Source is one member of a data message that carries values: a member of
// payload, a top-level Data 2.0 "wittra-*" key, or a member of the object
// binaryData decodes to.
type Source struct {
	Key    string
	Value  *Node
	Data20 bool // a top-level "wittra-*" key (Data 2.0)
}

// Sources returns the value-carrying members of a data message in the order
// Values reads them: the members of payload (when payloadType is DATA or
// absent), then each top-level "wittra-*" key, then the members of decoded
// binaryData. It is the one place outside Values that knows the shapes.
// An error wraps ErrMalformed (payloadType not a string, binaryData not
// base64 of a JSON object).
func Sources(root *Node) ([]Source, error) {
	if root == nil || root.Kind != 'o' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var out []Source
	data := true
	if pt := root.Get("payloadType"); pt != nil && pt.Kind != 'z' {
		s, ok := pt.Str()
		if !ok {
			return nil, fmt.Errorf("%w: payloadType is not a string", ErrMalformed)
		}
		data = s == "DATA"
	}
	if p := root.Get("payload"); data && p != nil && p.Kind == 'o' {
		for i, k := range p.Keys {
			out = append(out, Source{Key: k, Value: p.Vals[i]})
		}
	}
	for i, k := range root.Keys {
		if strings.HasPrefix(k, string(wittraPrefix)) {
			out = append(out, Source{Key: k, Value: root.Vals[i], Data20: true})
		}
	}
	if b := root.Get("binaryData"); b != nil && b.Kind != 'z' {
		obj, err := decodeBinaryNode(b)
		if err != nil {
			return nil, err
		}
		for i, k := range obj.Keys {
			out = append(out, Source{Key: k, Value: obj.Vals[i]})
		}
	}
	return out, nil
}

// decodeBinaryNode decodes legacy binaryData: base64 (padded or not) of a
// JSON object, as Values does.
func decodeBinaryNode(b *Node) (*Node, error) {
	s, ok := b.Str()
	if !ok {
		return nil, fmt.Errorf("%w: binaryData is not a string", ErrMalformed)
	}
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("%w: binaryData: %w", ErrMalformed, err)
	}
	obj, err := Parse(raw)
	if err != nil || obj.Kind != 'o' {
		return nil, fmt.Errorf("%w: binaryData does not decode to a JSON object", ErrMalformed)
	}
	return obj, nil
}
