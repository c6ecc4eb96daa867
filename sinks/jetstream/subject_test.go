package jetstream

import (
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"wittra-gateway/sinks"
	"wittra-gateway/wittra"
)

func TestEscapeToken(t *testing.T) {
	for in, want := range map[string]string{
		"AAE0-1F2E":  "AAE0-1F2E",
		"tag.7":      "tag%2E7",
		"a*b>c":      "a%2Ab%3Ec",
		"50%":        "50%25",
		"two words":  "two%20words",
		"tab\there":  "tab%09here",
		"nl\r\n":     "nl%0D%0A",
		"del\x7f":    "del%7F",
		"*":          "%2A",
		">":          "%3E",
		"Göteborg-1": "Göteborg-1",
		"$SYS":       "$SYS",
	} {
		if got := EscapeToken(in); got != want {
			t.Errorf("EscapeToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSubject(t *testing.T) {
	m := sinks.Message{Project: "P.1", Device: "D 2", Kind: sinks.KindEvent}
	if got := Subject("wittra.site-a", m); got != "wittra.site-a.P%2E1.D%202.event" {
		t.Errorf("Subject = %q", got)
	}
	m.Kind = sinks.KindData
	if got := Subject("wittra", m); got != "wittra.P%2E1.D%202.data" {
		t.Errorf("Subject = %q", got)
	}
}

// FuzzEscapeToken: for every id the intake accepts, the token is one valid
// literal NATS subject token that percent-decodes back to the id.
func FuzzEscapeToken(f *testing.F) {
	for _, s := range []string{"a", "tag.7", "%2E", "a b", "*", ">", "ü.*", "x\x01y", "%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if wittra.CheckID(id) != nil {
			return // refused at intake, never reaches a sink
		}
		tok := EscapeToken(id)
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, ". \t\r\n\f\x00\x7f") || strings.ContainsAny(tok, "*>") {
			t.Fatalf("EscapeToken(%q) = %q: not a safe literal token", id, tok)
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] < ' ' {
				t.Fatalf("EscapeToken(%q) = %q: control byte", id, tok)
			}
		}
		if !utf8.ValidString(tok) {
			t.Fatalf("EscapeToken(%q) = %q: invalid UTF-8", id, tok)
		}
		back, err := url.PathUnescape(tok)
		if err != nil || back != id {
			t.Fatalf("EscapeToken(%q) = %q decodes to %q (%v)", id, tok, back, err)
		}
	})
}

func TestMsgID(t *testing.T) {
	m := sinks.Message{Seq: 42, Received: time.Unix(1700000000, 5)}
	if got := MsgID("gw1", "pid-1", m); got != "pid-1" {
		t.Errorf("MsgID with payloadId = %q", got)
	}
	if got := MsgID("gw1", "", m); got != "wittra-gw:gw1:42:1700000000000000005" {
		t.Errorf("MsgID without payloadId = %q", got)
	}
	long := strings.Repeat("x", 200)
	a, b := MsgID("gw1", long, m), MsgID("gw1", long, sinks.Message{Seq: 7})
	if !strings.HasPrefix(a, "sha256:") || len(a) != 7+64 || a != b {
		t.Errorf("long payloadId: %q and %q, want the same sha256 id", a, b)
	}
	if got := MsgID("gw1", "a\r\nb", m); !strings.HasPrefix(got, "sha256:") {
		t.Errorf("payloadId with CRLF = %q, want hashed", got)
	}
	if MsgID("gw1", "a\nb", m) == MsgID("gw1", "a\rb", m) {
		t.Error("different payloadIds hash alike")
	}
}

func TestCovers(t *testing.T) {
	for _, c := range []struct {
		filter, prefix string
		want           bool
	}{
		{"wittra.>", "wittra", true},
		{">", "wittra", true},
		{"wittra.*.*.*", "wittra", true},
		{"wittra.*.*.data", "wittra", false},
		{"wittra.*.>", "wittra", true},
		{"wittra.>", "wittra.site-a", true},
		{"wittra.site-a.>", "wittra", false},
		{"wittra.*.>", "wittra.site-a", true},
		{"other.>", "wittra", false},
		{"wittra", "wittra", false},
		{"wittra.*.*.*.*", "wittra", false},
	} {
		if got := Covers(c.filter, c.prefix); got != c.want {
			t.Errorf("covers(%q, %q) = %v, want %v", c.filter, c.prefix, got, c.want)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	ok := Config{URLs: []string{"nats://127.0.0.1:4222"}, GatewayID: "gw1"}
	if _, err := ok.withDefaults(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	for name, c := range map[string]struct {
		edit func(*Config)
		want string
	}{
		"NoURL":       {func(c *Config) { c.URLs = nil }, "at least one server"},
		"BadScheme":   {func(c *Config) { c.URLs = []string{"tcp://x:1"} }, "must start with nats://"},
		"CredsInURL":  {func(c *Config) { c.URLs = []string{"nats://u:p@x:1"} }, "must not contain credentials"},
		"TwoAuths":    {func(c *Config) { c.Username, c.Token = "u", "t" }, "one of"},
		"PassNoUser":  {func(c *Config) { c.Password = "p" }, "username: required with password"},
		"BadPrefix":   {func(c *Config) { c.SubjectPrefix = "a..b" }, "empty token"},
		"WildPrefix":  {func(c *Config) { c.SubjectPrefix = "a.*" }, "wildcards"},
		"BadStream":   {func(c *Config) { c.Stream.Name = "a.b" }, "stream.name"},
		"NotCovered":  {func(c *Config) { c.Stream.Subjects = []string{"other.>"} }, "must capture wittra.>"},
		"Replicas":    {func(c *Config) { c.Stream.Replicas = 7 }, "between 1 and 5"},
		"DupOverAge":  {func(c *Config) { c.Stream.MaxAge, c.Stream.DuplicateWindow = time.Minute, time.Hour }, "must not exceed max_age"},
		"NoGatewayID": {func(c *Config) { c.GatewayID = "" }, "gateway.id: required"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := ok
			cfg.URLs = append([]string(nil), ok.URLs...)
			c.edit(&cfg)
			_, err := cfg.withDefaults()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	c, _ := ok.withDefaults()
	if c.Stream.Name != DefaultStream || c.Stream.Subjects[0] != "wittra.>" || c.Stream.MaxAge != DefaultMaxAge || c.Stream.DuplicateWindow != DefaultDuplicateWindow {
		t.Errorf("defaults = %+v", c.Stream)
	}
}
