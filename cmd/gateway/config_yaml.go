package main

// Strict decoding of the YAML file into Config (config.go).
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
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ---------------------------------------------------------------------------
// Scalars.

// Scalar is one value of the file: a string (${NAME} expanded; null is ""),
// a bool, an int, a time.Duration ("30s", "168h") or an int64, which is
// always a byte size ("512KiB", "10MB"). It keeps the line the value was
// written on, and its errors name the problem, never the value.
type Scalar[T string | bool | int | time.Duration | int64] struct {
	V    T
	Set  bool // false when absent or null (but a null string is "", set)
	Line int
}

// missingEnv is a ${NAME} without default whose variable is unset: an
// error, except for the offline queue commands (the value is then expanded
// with "").
type missingEnv struct{ names []string }

func (e *missingEnv) Error() string {
	msgs := make([]string, len(e.names))
	for i, n := range e.names {
		msgs[i] = fmt.Sprintf("${%s}: environment variable %s is not set (use ${%s:-default} for a default)", n, n, n)
	}
	return strings.Join(msgs, "; ")
}

func (s *Scalar[T]) UnmarshalYAML(n *yaml.Node) error {
	s.Line = n.Line
	text, null, err := scalarText(n)
	_, isString := any(s.V).(string)
	switch {
	case err != nil:
		return err
	case null:
		s.Set = isString
		return nil
	}
	var v any
	var missing []string
	switch any(s.V).(type) {
	case string, time.Duration, int64: // only values that hold text expand
		if text, missing = expandEnv(text); len(missing) > 0 && !isString {
			return &missingEnv{missing}
		}
	}
	switch any(s.V).(type) {
	case string:
		v = text
	case bool:
		switch strings.ToLower(text) {
		case "true", "false":
			v = strings.ToLower(text) == "true"
		default:
			return errors.New("expected true or false")
		}
	case int:
		if v, err = strconv.Atoi(text); err != nil {
			return errors.New("expected an integer")
		}
	case time.Duration:
		if v, err = time.ParseDuration(strings.TrimSpace(text)); err != nil {
			if _, nerr := strconv.ParseFloat(strings.TrimSpace(text), 64); nerr == nil {
				return errors.New("has no unit: use a Go duration such as 30s, 15m or 168h")
			}
			return errors.New("not a duration: use a Go duration such as 30s, 15m or 168h")
		}
	case int64:
		if v, err = parseSize(text); err != nil {
			return err
		}
	}
	s.V, s.Set = v.(T), true
	if len(missing) > 0 {
		return &missingEnv{missing}
	}
	return nil
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

// maxNodes bounds the work on aliases that expand a small file into a huge
// tree; maxDepth the nesting, far deeper than any key's, which an alias
// inside its own anchor (`a: &x [*x]`) would make endless.
const (
	maxNodes = 20_000 // a real file has a few hundred
	maxDepth = 32
)

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
	// yaml.v3 says "found character that cannot start any token" for a tab
	// in the indentation, or names a tab on the line before: say what it is.
	tab := strings.Contains(m[2], "tab character")
	if tab || strings.Contains(m[2], "cannot start any token") {
		for i, l := range strings.Split(string(data), "\n") {
			indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
			if strings.Contains(indent, "\t") && (i+1 == line || tab && i+1 > line) {
				p.add(i+1, "", errors.New("tabs are not allowed for indentation: indent with spaces"))
				return
			}
		}
	}
	p.add(line, "", errors.New(m[2]))
}

// decode fills v from n; path names the value in errors ("sinks[1].url");
// sinkType, on a sink's mapping, restricts its keys to that type's.
func (p *parser) decode(n *yaml.Node, v reflect.Value, path, sinkType string) {
	if n = deref(n); p.depth >= maxDepth {
		p.fail(n.Line, path, errors.New("nested too deeply (an alias inside its own anchor?)"))
		return
	}
	if !p.spend(n, path) {
		return
	}
	p.depth++
	defer func() { p.depth-- }()
	if !isNull(n) || v.Kind() == reflect.String {
		p.given[path] = true
	}
	var err error
	switch d := v.Addr().Interface().(type) {
	case *string:
		err = read(n, d)
	case *bool:
		err = read(n, d)
	case *int:
		err = read(n, d)
	case *time.Duration:
		err = read(n, d)
	case *int64:
		err = read(n, d)
	default:
		p.composite(n, v, path, sinkType)
	}
	var me *missingEnv
	if err != nil && !(p.offline && errors.As(err, &me)) {
		p.fail(n.Line, path, err)
	}
}

// spend counts one more value or mapping decoded; past maxNodes it says so
// once and reports false.
func (p *parser) spend(n *yaml.Node, path string) bool {
	if p.nodes++; p.nodes == maxNodes {
		p.add(n.Line, path, errors.New("too many values (aliases or merge keys expanding?)"))
	}
	return p.nodes < maxNodes
}

// read decodes one scalar into *dst (kept when absent or null).
func read[T string | bool | int | time.Duration | int64](n *yaml.Node, dst *T) error {
	var s Scalar[T]
	err := s.UnmarshalYAML(n)
	if s.Set {
		*dst = s.V
	}
	return err
}

// composite decodes a mapping into a struct or pointer, a list into a slice.
func (p *parser) composite(n *yaml.Node, v reflect.Value, path, sinkType string) {
	want, kind := "a mapping", yaml.MappingNode
	if v.Kind() == reflect.Slice {
		want, kind = "a list", yaml.SequenceNode
	}
	switch {
	case isNull(n):
		return // the default stays
	case n.Kind != kind:
		p.fail(n.Line, path, fmt.Errorf("expected %s, got %s", want, kindName(n)))
		return
	case v.Kind() == reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		v = v.Elem()
		setDefaults(v)
	}
	if v.Kind() == reflect.Slice {
		v.Set(reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content)))
		for i, c := range n.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			p.mark(ip, c.Line)
			setDefaults(v.Index(i))
			p.decode(c, v.Index(i), ip, "")
		}
		return
	}
	if v.Type() == reflect.TypeOf(SinkConfig{}) {
		sinkType = sinkTypeOf(n)
	}
	p.mapping(n, v, path, sinkType, map[string]int{}, false)
}

func setDefaults(v reflect.Value) {
	if d, ok := v.Addr().Interface().(interface{ setDefaults() }); ok {
		d.setDefaults()
	}
}

// mapping decodes the keys of n into the fields of struct v. Merge keys
// (<<) come after the mapping's own keys, which win.
func (p *parser) mapping(n *yaml.Node, v reflect.Value, path, sinkType string, seen map[string]int, merged bool) {
	if p.depth >= maxDepth {
		p.fail(n.Line, path, errors.New("nested too deeply (an alias inside its own anchor?)"))
		return
	}
	if !p.spend(n, path) { // merge keys can repeat a mapping without end too
		return
	}
	p.depth++
	defer func() { p.depth-- }()
	fields := fieldsOf(v.Type())
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			if val = deref(val); val.Kind == yaml.SequenceNode {
				merges = append(merges, val.Content...)
			} else {
				merges = append(merges, val)
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
		case f.file:
			p.mark(kp, k.Line)
			p.secretFile(val, v.FieldByIndex(f.index), kp, hasKey(n, strings.TrimSuffix(k.Value, "_file")))
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

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

// secretFile reads the secret named by the KEY_file value n into v.
func (p *parser) secretFile(n *yaml.Node, v reflect.Value, path string, both bool) {
	var name Scalar[string]
	err := name.UnmarshalYAML(n)
	key := strings.TrimSuffix(path, "_file")
	var me *missingEnv
	switch {
	case err != nil && p.offline && errors.As(err, &me):
	case err != nil:
		p.fail(n.Line, path, err)
	case name.V == "":
		return
	case both:
		p.fail(n.Line, path, fmt.Errorf("set either %s or %[1]s_file, not both", key[strings.LastIndex(key, ".")+1:]))
	case p.offline:
		return
	default:
		file := name.V
		if !filepath.IsAbs(file) {
			file = filepath.Join(p.dir, file)
		}
		b, err := readSecret(file)
		s := strings.TrimRight(string(b), "\r\n")
		switch {
		case err != nil:
			p.fail(n.Line, path, fmt.Errorf("read secret file: %w", err))
		case len(b) > maxSecret:
			p.fail(n.Line, path, fmt.Errorf("secret file %s is larger than %d bytes: not a secret", file, maxSecret))
		case s == "":
			p.fail(n.Line, path, fmt.Errorf("secret file %s is empty", file))
		default:
			v.SetString(s)
			return
		}
	}
	v.SetString("")
	p.bad[key] = true // reported on the file key
}

// maxSecret bounds what is read of a *_file (a wrong path such as a log
// file or /dev/zero is refused, not read whole).
const maxSecret = 64 << 10

// readSecret reads at most maxSecret+1 bytes of file.
func readSecret(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxSecret+1))
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
	file  bool     // KEY_file of a `secret:"file"` field
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
		switch {
		case opt == "inline":
			for k, fi := range fieldsOf(f.Type) {
				out[k] = fieldInfo{append([]int{i}, fi.index...), fi.types, fi.file}
			}
		case name != "":
			out[name] = fieldInfo{[]int{i}, types, false}
			if f.Tag.Get("secret") == "file" {
				out[name+"_file"] = fieldInfo{[]int{i}, types, true}
			}
		}
	}
	return out
}

// sinkTypeOf is the expanded `type:` of a sink's mapping ("" when absent or unusable).
func sinkTypeOf(n *yaml.Node) string {
	for i := 0; i+1 < len(n.Content); i += 2 {
		var s Scalar[string]
		if n.Content[i].Value == "type" && s.UnmarshalYAML(n.Content[i+1]) == nil {
			return s.V
		}
	}
	return ""
}

// sinkTypes are the known sink types.
var sinkTypes = map[string]bool{"broker": true, "subscriber": true, "mqtt": true, "cumulocity": true, "jetstream": true}

// foreignKey explains why key is refused on a sink of type typ.
func foreignKey(typ, key string) error {
	switch typ + "." + key {
	case "jetstream.url":
		return errors.New("type jetstream takes urls (a list)")
	case "jetstream.topic_prefix":
		return errors.New("type jetstream takes subject_prefix (dot-separated)")
	case "subscriber.retain":
		return errors.New("not for type subscriber: it delivers every message to one client; retained values belong to a type broker sink")
	}
	var own, others []string
	for k, f := range fieldsOf(reflect.TypeOf(SinkConfig{})) {
		switch {
		case f.types == nil || slices.Contains(f.types, typ):
			own = append(own, k)
		case k == key:
			others = f.types
		}
	}
	slices.Sort(own)
	if len(others) == 1 {
		return fmt.Errorf("only for type %s (type %s reads: %s)", others[0], typ, strings.Join(own, ", "))
	}
	return fmt.Errorf("not a key of type %s (its keys: %s)", typ, strings.Join(own, ", "))
}
