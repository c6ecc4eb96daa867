package main

// Strict decoding of the YAML file into the typed structs of config_file.go.
//
// yaml.v3 parses the text into a node tree (syntax errors, anchors); the
// walker below fills the structs from it. yaml.v3's own Decoder with
// KnownFields is not used for that step: it stops at the first scalar
// error, names neither the key path nor (in flow mappings) the right line,
// quotes values in its messages, and Node.Decode, which per-type decoding
// would need, ignores KnownFields. The walker reports every problem with
// the line of the key or value, and its messages never quote a value.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ---------------------------------------------------------------------------
// Scalars. Each keeps the line it was written on (0: absent) and is
// yaml.Unmarshaler; their errors name the problem, never the value.

// Str is a string with ${NAME} and ${NAME:-default} expanded. Null is "".
type Str struct {
	V    string
	Line int
}

// Bool is true or false; null keeps the default.
type Bool struct {
	V, Set bool
	Line   int
}

// Int is an integer; null keeps the default.
type Int struct {
	V    int
	Set  bool
	Line int
}

// Duration is a Go duration ("30s", "168h"); null keeps the default.
type Duration struct {
	V    time.Duration
	Set  bool
	Line int
}

// Size is a byte count with an optional unit ("512KiB", "10MB"); null keeps the default.
type Size struct {
	V    int64
	Set  bool
	Line int
}

// missingEnv is a ${NAME} without default whose variable is unset: an
// error, except for the offline queue commands.
type missingEnv struct{ names []string }

func (e *missingEnv) Error() string {
	msgs := make([]string, len(e.names))
	for i, n := range e.names {
		msgs[i] = fmt.Sprintf("${%s}: environment variable %s is not set (use ${%s:-default} for a default)", n, n, n)
	}
	return strings.Join(msgs, "; ")
}

func (s *Str) UnmarshalYAML(n *yaml.Node) error {
	s.Line = n.Line
	v, null, err := scalarText(n)
	if err != nil || null {
		return err
	}
	var missing []string
	s.V, missing = expandEnv(v)
	if len(missing) > 0 {
		return &missingEnv{missing}
	}
	return nil
}

func (b *Bool) UnmarshalYAML(n *yaml.Node) error {
	b.Line = n.Line
	if isNull(n) {
		return nil
	}
	// No ${...} expansion: only strings expand.
	switch v := strings.ToLower(n.Value); {
	case n.Kind == yaml.ScalarNode && (v == "true" || v == "false"):
		b.V, b.Set = v == "true", true
		return nil
	}
	return errors.New("expected true or false")
}

func (i *Int) UnmarshalYAML(n *yaml.Node) error {
	i.Line = n.Line
	if isNull(n) {
		return nil
	}
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return errors.New("expected an integer")
	}
	i.V, i.Set = v, true
	return nil
}

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s Str
	if err := s.UnmarshalYAML(n); err != nil || isNull(n) {
		return err
	}
	d.Line = n.Line
	v, err := time.ParseDuration(strings.TrimSpace(s.V))
	if err != nil {
		if _, nerr := strconv.ParseFloat(strings.TrimSpace(s.V), 64); nerr == nil {
			return errors.New("has no unit: use a Go duration such as 30s, 15m or 168h")
		}
		return errors.New("not a duration: use a Go duration such as 30s, 15m or 168h")
	}
	d.V, d.Set = v, true
	return nil
}

func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	var s Str
	if err := s.UnmarshalYAML(n); err != nil || isNull(n) {
		return err
	}
	z.Line = n.Line
	v, err := parseSize(s.V)
	if err != nil {
		return err
	}
	z.V, z.Set = v, true
	return nil
}

// or gives the value, or def when the key is absent (a null string is "").
func (s Str) or(def string) string {
	if s.Line == 0 {
		return def
	}
	return s.V
}

func (b Bool) or(def bool) bool {
	if !b.Set {
		return def
	}
	return b.V
}

func (i Int) or(def int) int {
	if !i.Set {
		return def
	}
	return i.V
}

func (d Duration) or(def time.Duration) time.Duration {
	if !d.Set {
		return def
	}
	return d.V
}

func (z Size) or(def int64) int64 {
	if !z.Set {
		return def
	}
	return z.V
}

// strs converts a list; absent or null stays nil, [] is empty and not nil.
func strs(l []Str) []string {
	if l == nil {
		return nil
	}
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = s.V
	}
	return out
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// scalarText is the text of a single value; null reports null.
func scalarText(n *yaml.Node) (string, bool, error) {
	switch {
	case isNull(n):
		return "", true, nil
	case n.Kind != yaml.ScalarNode:
		return "", false, fmt.Errorf("expected a single value, got %s", kindName(n))
	case n.Tag != "" && !strings.HasPrefix(n.Tag, "!!"):
		return "", false, errors.New("a value with an unknown YAML tag (quote a value that starts with !)")
	}
	return n.Value, false, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!null":
		return "nothing"
	}
	return "a string"
}

// envRef matches exactly ${NAME} and ${NAME:-default}; nothing else is expanded.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// expandEnv expands ${NAME} and ${NAME:-default} in s. Every other '$' is kept.
// It returns the names of unset variables referenced without a default.
func expandEnv(s string) (string, []string) {
	var missing []string
	out := envRef.ReplaceAllStringFunc(s, func(ref string) string {
		m := envRef.FindStringSubmatch(ref)
		v, ok := os.LookupEnv(m[1])
		switch {
		case m[2] != "" && (!ok || v == ""):
			return m[2][2:]
		case !ok && m[2] == "":
			missing = append(missing, m[1])
		}
		return v
	})
	return out, missing
}

var (
	reSize    = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)
	sizeUnits = map[string]float64{
		"": 1, "b": 1,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	}
)

// parseSize parses "512KiB", "10MB" (SI, 1000-based), "1GiB", "100B" or a
// plain number of bytes.
func parseSize(s string) (int64, error) {
	m := reSize.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, errors.New("not a size: use a number of bytes with an optional unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 512KiB or 1GiB")
	}
	mult, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, errors.New("unknown unit: use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB")
	}
	n, _ := strconv.ParseFloat(m[1], 64)
	switch v := n * mult; {
	case v >= math.MaxInt64:
		return 0, errors.New("too large")
	case v != math.Trunc(v):
		return 0, errors.New("not a whole number of bytes")
	default:
		return int64(v), nil
	}
}

// ---------------------------------------------------------------------------
// The walker.

// maxNodes bounds the work on aliases that expand a small file into a huge tree.
const maxNodes = 100_000

var unmarshaler = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// reYAMLLine takes the line out of yaml.v3's syntax errors, which are plain strings.
var reYAMLLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML decodes data into out (a pointer to a struct). It returns false
// when the text is not YAML (then nothing else can be checked).
func (p *parser) parseYAML(data []byte, out any) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, extra yaml.Node
	err := dec.Decode(&doc)
	if err == nil {
		if err = dec.Decode(&extra); err == nil {
			p.add(extra.Line, "", errors.New("only one YAML document is allowed"))
			return false
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		p.syntaxError(data, err)
		return false
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		p.decode(doc.Content[0], reflect.ValueOf(out).Elem(), "", "")
	}
	return true
}

// syntaxError reports a yaml.v3 parse error with its line.
func (p *parser) syntaxError(data []byte, err error) {
	msg := err.Error()
	// yaml.v3 quotes an unknown alias name: with `password: *secret` that
	// name is the password.
	if strings.Contains(msg, "unknown anchor") {
		msg = regexp.MustCompile(`unknown anchor '.*' referenced`).ReplaceAllString(msg, "unknown anchor referenced (quote a value that starts with *)")
	}
	m := reYAMLLine.FindStringSubmatch(msg)
	if m == nil {
		p.add(0, "", errors.New(strings.TrimPrefix(msg, "yaml: ")))
		return
	}
	line, _ := strconv.Atoi(m[1])
	// A tab in the indentation is what "cannot start any token" means here
	// nearly always; say so on the first such line.
	for i, l := range strings.Split(string(data), "\n") {
		if indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]; strings.Contains(indent, "\t") && strings.TrimSpace(l) != "" && i+1 <= line {
			p.add(i+1, "", errors.New("tabs are not allowed for indentation: indent with spaces"))
			return
		}
	}
	p.add(line, "", errors.New(m[2]))
}

// decode fills v from n; path names the value in errors ("sinks[1].url");
// sinkType, on a sink's mapping, restricts its keys to that type's.
func (p *parser) decode(n *yaml.Node, v reflect.Value, path, sinkType string) {
	n = deref(n)
	if p.nodes++; p.nodes == maxNodes {
		p.add(n.Line, path, errors.New("too many values (aliases expanding?)"))
	}
	if p.nodes >= maxNodes {
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshaler) {
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			var me *missingEnv
			if p.offline && errors.As(err, &me) {
				return
			}
			p.fail(n.Line, path, err)
		}
		return
	}
	if isNull(n) {
		return // the default stays
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Kind != yaml.MappingNode {
			p.fail(n.Line, path, fmt.Errorf("expected a mapping, got %s", kindName(n)))
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		p.decode(n, v.Elem(), path, sinkType)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			p.fail(n.Line, path, fmt.Errorf("expected a list, got %s", kindName(n)))
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content)))
		for i, c := range n.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			p.mark(ip, c.Line)
			p.decode(c, v.Index(i), ip, "")
		}
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			p.fail(n.Line, path, fmt.Errorf("expected a mapping, got %s", kindName(n)))
			return
		}
		if v.Type() == reflectTypeOfSink {
			sinkType = sinkTypeOf(n)
		}
		p.mapping(n, v, path, sinkType, map[string]int{}, false)
	}
}

// mapping decodes the keys of n into the fields of struct v. Merge keys
// (<<) come after the mapping's own keys, which win.
func (p *parser) mapping(n *yaml.Node, v reflect.Value, path, sinkType string, seen map[string]int, merged bool) {
	fields := fieldsOf(v.Type())
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			merges = append(merges, val)
			if val = deref(val); val.Kind == yaml.SequenceNode {
				merges = append(merges[:len(merges)-1], val.Content...)
			}
			continue
		}
		kp := k.Value
		if path != "" {
			kp = path + "." + k.Value
		}
		first, dup := seen[k.Value]
		switch f, known := fields[k.Value]; {
		case dup && merged:
		case dup:
			p.add(k.Line, kp, fmt.Errorf("duplicate key (already defined at line %d)", first))
		case !known:
			p.add(k.Line, kp, errors.New("unknown key"))
		case sinkType != "" && f.types != nil && !slices.Contains(f.types, sinkType) && sinkTypes[sinkType]:
			p.add(k.Line, kp, foreignKey(sinkType, k.Value))
		default:
			p.mark(kp, k.Line)
			p.decode(val, v.FieldByIndex(f.index), kp, "")
		}
		if !dup {
			seen[k.Value] = k.Line
		}
	}
	for _, m := range merges {
		if m = deref(m); m.Kind == yaml.MappingNode {
			p.mapping(m, v, path, sinkType, seen, true)
		}
	}
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

type fieldInfo struct {
	index []int
	types []string // sink types that read the key; nil: all
}

// fieldsOf maps the YAML keys of struct type t (",inline" fields included) to its fields.
func fieldsOf(t reflect.Type) map[string]fieldInfo {
	out := map[string]fieldInfo{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opt, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		var types []string
		if tt, ok := f.Tag.Lookup("types"); ok {
			types = strings.Fields(tt)
		}
		if opt == "inline" {
			for k, fi := range fieldsOf(f.Type) {
				out[k] = fieldInfo{append([]int{i}, fi.index...), fi.types}
			}
			continue
		}
		if name != "" {
			out[name] = fieldInfo{[]int{i}, types}
		}
	}
	return out
}

// sinkTypeOf is the expanded `type:` of a sink's mapping ("" when absent or unusable).
func sinkTypeOf(n *yaml.Node) string {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "type" {
			var s Str
			if s.UnmarshalYAML(n.Content[i+1]) == nil {
				return s.V
			}
		}
	}
	return ""
}
