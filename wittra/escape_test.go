package wittra

import (
	"errors"
	"strings"
	"testing"
)

func TestTopicIDEscapesReversibly(t *testing.T) {
	cases := []struct{ in, want string }{
		{"D00124B001E2A1B2C", "D00124B001E2A1B2C"},
		{"Äpfel-1", "Äpfel-1"},
		{"a/b", "a%2Fb"},
		{"+#", "%2B%23"},
		{"50%", "50%25"},
		{"nul\x00tab\tdel\x7f", "nul%00tab%09del%7F"},
		{"bad\xffutf8", "bad%FFutf8"},
	}
	for _, c := range cases {
		got, err := TopicID(c.in)
		if err != nil || got != c.want {
			t.Errorf("TopicID(%q) = %q, %v; want %q", c.in, got, err, c.want)
			continue
		}
		if err := CheckID(got); err != nil {
			t.Errorf("TopicID(%q) = %q is not a safe level: %v", c.in, got, err)
		}
		if back := UnescapeID(got); back != c.in {
			t.Errorf("UnescapeID(%q) = %q, want %q", got, back, c.in)
		}
	}
	if _, err := TopicID(strings.Repeat("/", MaxIDLen)); !errors.Is(err, ErrInvalidID) {
		t.Errorf("an id too long once escaped: err = %v, want ErrInvalidID", err)
	}
}

func FuzzTopicID(f *testing.F) {
	for _, s := range []string{"D1", "a/b", "%", "%2F", "\x00", "\xff\xfe", "é#"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := TopicID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("TopicID(%q): %v", s, err)
			}
			return
		}
		if err := CheckID(got); err != nil || strings.ContainsAny(got, "/+#\x00") {
			t.Fatalf("TopicID(%q) = %q is not a safe level: %v", s, got, err)
		}
		if back := UnescapeID(got); back != s {
			t.Fatalf("UnescapeID(TopicID(%q)) = %q", s, back)
		}
	})
}
