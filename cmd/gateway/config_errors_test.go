package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Each problem is reported on the line it is written on, flow mappings
// spread over several lines included.
func TestConfigErrorLinesInFlowMappings(t *testing.T) {
	errs := parseErrs(t, yml(
		"gateway: {id: gw1}", // 1
		"sinks:",
		"  - {name: plant, type: mqtt,",
		"     url: 'tcp://h:1883',",
		"     qos: one,", // 5
		"     tenant: t1}",
		"webhook: {routes: [{path: /w,",
		"    token_fil: x}]}",
	), t.TempDir())
	for _, want := range []string{
		"line 5: sinks[0].qos: expected an integer",
		"line 6: sinks[0].tenant: only for type cumulocity",
		"line 8: webhook.routes[0].token_fil: unknown key",
	} {
		wantProblem(t, errs, want)
	}
	if len(errs) != 3 {
		t.Errorf("got %d problems, want 3:\n%v", len(errs), errs)
	}
}

// A tab in the indentation is named as such, on its line.
func TestConfigErrorTabIndent(t *testing.T) {
	for _, data := range []string{
		yml("gateway:", "  id: gw1", "log:", "\tlevel: info"),
		yml("sinks:", "  - name: a", "  \ttype: broker"),
	} {
		errs := parseErrs(t, data, t.TempDir())
		line := "line 4: "
		if strings.HasPrefix(data, "sinks") {
			line = "line 3: "
		}
		wantProblem(t, errs, line+"tabs are not allowed for indentation")
		if strings.Contains(errs.Error(), "cannot start any token") {
			t.Errorf("yaml.v3's message kept:\n%v", errs)
		}
	}
	// A tab inside a value is no indentation.
	if cfg := mustParse(t, yml("gateway:", "  id: \"a\\tb\"", "log: {level: info}\t# tab before a comment"), t.TempDir()); cfg.Gateway.ID != "a\tb" {
		t.Errorf("id = %q", cfg.Gateway.ID)
	}
}

// Shape errors do not hide each other, nor the other problems.
func TestConfigErrorsAllShapeErrorsTogether(t *testing.T) {
	const secret = "Sup3r-S3cret-Shape"
	errs := parseErrs(t, yml(
		"log:", // 1
		"  level: [debug]",
		"webhook:",
		"  routes: /wittra",
		"broker:", // 5
		"  users: "+secret,
		"  listeners: {type: tcp}",
		"buffer:",
		"  max_age: 30",
		"  max_bytes: 5", // 10
		"sinks:",
		"  - name: plant",
		"    type: mqtt",
		"    url: 'tcp://h:1883'",
		"    qos: [1]", // 15
		"    tls: yes",
		"  - name",
		"  - {name: b, type: broker, retain_max_age: soon, bogus: 1}",
	), t.TempDir())
	want := []string{
		"line 2: log.level: expected a single value, got a list",
		"line 4: webhook.routes: expected a list, got a string",
		"line 6: broker.users: expected a list, got a string",
		"line 7: broker.listeners: expected a list, got a mapping",
		"line 9: buffer.max_age: has no unit",
		"line 10: buffer.max_bytes: must be at least 64KiB",
		"line 15: sinks[0].qos: expected a single value, got a list",
		"line 16: sinks[0].tls: expected a mapping, got a string",
		"line 17: sinks[1]: expected a mapping, got a string",
		"line 18: sinks[2].retain_max_age: not a duration",
		"line 18: sinks[2].bogus: unknown key",
	}
	for _, w := range want {
		wantProblem(t, errs, w)
	}
	if len(errs) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(errs), len(want), errs)
	}
	if strings.Contains(errs.Error(), secret[:8]) {
		t.Errorf("an error quotes a value:\n%v", errs)
	}
}

// Anchors, aliases and merge keys work as in YAML; an alias bomb is cut short.
func TestConfigAliasesAndMergeKeys(t *testing.T) {
	cfg := mustParse(t, yml(
		"buffer: {max_age: &week 168h, dedup_window: *week}",
		"sinks:",
		"  - &plant {name: a, type: mqtt, url: 'tcp://h:1883', qos: 2}",
		"  - {<<: *plant, name: b}",
	), t.TempDir())
	if cfg.Buffer.DedupWindow != 168*time.Hour || len(cfg.Sinks) != 2 || cfg.Sinks[1].Name != "b" || cfg.Sinks[1].URL != "tcp://h:1883" || cfg.Sinks[1].QoS != 2 {
		t.Errorf("aliases: buffer %+v, sinks %+v", cfg.Buffer, cfg.Sinks)
	}
	var b strings.Builder
	b.WriteString("x: &p [")
	for i := range 400 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("D")
	}
	b.WriteString("]\nwebhook:\n  routes: [")
	for i := range 400 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("{path: /w, device_prefixes: *p}")
	}
	b.WriteString("]\n")
	errs := parseErrs(t, b.String(), t.TempDir())
	wantProblem(t, errs, "too many values")
}

// The secret of a *_file key is never echoed, and both keys are refused together.
func TestConfigSecretFileKeys(t *testing.T) {
	errs := parseErrs(t, yml("sinks:", "  - {name: a, type: mqtt, url: 'tcp://h:1883', password_file: /nonexistent/x, password: inline-S3cret}"), t.TempDir())
	wantProblem(t, errs, "line 2: sinks[0].password_file: set either password or password_file, not both")
	if strings.Contains(errs.Error(), "inline-S3cret") {
		t.Errorf("secret echoed:\n%v", errs)
	}
	// password_file belongs to the types that read password.
	wantProblem(t, parseErrs(t, yml("sinks:", "  - {name: a, type: broker, password_file: x}"), t.TempDir()), "line 2: sinks[0].password_file: not a key of type broker")
}

// An alias inside its own anchor is an error, not an endless descent.
func TestConfigAliasCycles(t *testing.T) {
	for _, data := range []string{
		"gateway: &g {<<: *g}\n",
		"webhook: {routes: &r [*r]}\n",
		"sinks: &s [{name: a, type: broker, <<: *s}]\n",
		"sinks: [&s {name: a, type: mqtt, tls: *s}]\n",
	} {
		cfg, err := ParseConfig([]byte(data), t.TempDir())
		if err == nil {
			t.Errorf("%q accepted: %+v", data, cfg)
		}
	}
}

// Merge keys that multiply a mapping are cut short like aliases.
func TestConfigMergeBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("x: &a0 {id: gw}\n")
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&b, "x%d: &a%d {<<: [", i, i)
		for j := range 40 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]}\n")
	}
	b.WriteString("gateway: {<<: *a5}\n")
	wantProblem(t, parseErrs(t, b.String(), t.TempDir()), "too many values")
}

// A *_file that is not a secret (a huge file, /dev/zero) is refused, not read whole.
func TestConfigSecretFileTooLarge(t *testing.T) {
	wantProblem(t, parseErrs(t, yml("webhook:", "  routes:", "    - {path: /w, token_file: /dev/zero}"), t.TempDir()),
		"line 3: webhook.routes[0].token_file: ", "larger than 65536 bytes")
}
