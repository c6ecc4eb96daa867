package wittra

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseKeepsOrderAndNumberText(t *testing.T) {
	n, err := Parse([]byte(`{"b":1.50,"a":{"value":12345678901234567890},"b":2.0e0,"s":"x<&>"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(n.Keys, []string{"b", "a", "s"}) {
		t.Fatalf("keys %v, want b a s (first position, last value for a duplicate)", n.Keys)
	}
	if got := n.Get("b").Text; got != "2.0e0" {
		t.Errorf("duplicate key: got %q, want the last value's text 2.0e0", got)
	}
	if got := n.Get("a").Unwrap().Text; got != "12345678901234567890" {
		t.Errorf("unwrapped number text %q", got)
	}
	if got := string(n.AppendJSON(nil)); got != `{"b":2.0e0,"a":{"value":12345678901234567890},"s":"x<&>"}` {
		t.Errorf("AppendJSON = %s", got)
	}
	if got := string(n.Without("a", "s").AppendJSON(nil)); got != `{"b":2.0e0}` {
		t.Errorf("Without = %s", got)
	}
	if n.Get("missing") != nil || n.Get("b").Get("x") != nil {
		t.Error("Get of a missing member or on a number must be nil")
	}
}

func TestParseRefuses(t *testing.T) {
	deep := strings.Repeat("[", maxTreeDepth+2) + strings.Repeat("]", maxTreeDepth+2)
	for name, in := range map[string]string{
		"trailing data": `{"a":1} {}`,
		"truncated":     `{"a":`,
		"too deep":      deep,
	} {
		if _, err := Parse([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

func sourceKeys(t *testing.T, body string) []string {
	t.Helper()
	root, err := Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	srcs, err := Sources(root)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, s := range srcs {
		k := s.Key
		if s.Data20 {
			k = "d20:" + k
		}
		keys = append(keys, k)
	}
	return keys
}

func TestSourcesShapes(t *testing.T) {
	// binaryData {"light":3} in unpadded base64
	for _, c := range []struct {
		name, body string
		want       []string
	}{
		{"payload", `{"payloadType":"DATA","payload":{"temperature":1,"battery":{"percentage":9}}}`, []string{"temperature", "battery"}},
		{"no payloadType", `{"payload":{"humidity":{"humidity":40}}}`, []string{"humidity"}},
		{"event has none", `{"payloadType":"EVENT","payload":{"changes":{}}}`, nil},
		{"data 2.0 after payload", `{"wittra-temperature":{"value":1},"payload":{"light":2},"other":1}`, []string{"light", "d20:wittra-temperature"}},
		{"binaryData unpadded", `{"binaryData":"eyJsaWdodCI6M30"}`, []string{"light"}},
		{"binaryData padded", `{"binaryData":"eyJsaWdodCI6M30="}`, []string{"light"}},
		{"null binaryData", `{"binaryData":null,"payload":{"x":1}}`, []string{"x"}},
	} {
		if got := sourceKeys(t, c.body); !slices.Equal(got, c.want) {
			t.Errorf("%s: sources %v, want %v", c.name, got, c.want)
		}
	}
	for name, body := range map[string]string{
		"payloadType a number": `{"payloadType":3,"payload":{"x":1}}`,
		"binaryData a number":  `{"binaryData":3}`,
		"binaryData not b64":   `{"binaryData":"%%%"}`,
		"binaryData an array":  `{"binaryData":"WzFd"}`,
		"not an object":        `[1]`,
	} {
		root, err := Parse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Sources(root); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

// Sources and Values read the same shapes: every value Values finds lies
// under a key Sources returns, for every fixture.
func TestSourcesAgreeWithValues(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.json")
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		vals, err := Values(body)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		root, err := Parse(body)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		srcs, err := Sources(root)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, v := range vals {
			top, _, _ := strings.Cut(v.Path, "/")
			if !slices.ContainsFunc(srcs, func(s Source) bool { return s.Key == top }) {
				t.Errorf("%s: value %s has no source %q", f, v.Path, top)
			}
		}
	}
}

// FuzzSources: whatever Values accepts, Parse and Sources accept too, and
// every value Values finds lies under a key Sources returns (the two readers
// agree on the shapes).
func FuzzSources(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"payloadType":"","payload":{"a":1},"binaryData":"eyJiIjoyfQ"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		vals, err := Values(body)
		if err != nil {
			return
		}
		root, err := Parse(body)
		if err != nil {
			if strings.Contains(err.Error(), "nested deeper") {
				return // Parse bounds depth; Values publishes deep objects whole
			}
			t.Fatalf("Values accepted what Parse refuses: %v", err)
		}
		srcs, err := Sources(root)
		if err != nil {
			if strings.Contains(err.Error(), "binaryData does not decode") {
				return // the decoded object may nest deeper than Parse allows
			}
			t.Fatalf("Values accepted what Sources refuses: %v", err)
		}
		for _, v := range vals {
			top, _, _ := strings.Cut(v.Path, "/")
			if !slices.ContainsFunc(srcs, func(s Source) bool { return s.Key == top }) {
				t.Fatalf("value %s has no source %q", v.Path, top)
			}
		}
	})
}
