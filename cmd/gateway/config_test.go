package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// yml joins lines with "\n": line N of the document is argument N.
func yml(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

// unsetenv removes name for the duration of the test.
func unsetenv(t *testing.T, name string) {
	t.Helper()
	t.Setenv(name, "") // registers the restore
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}

func mustParse(t *testing.T, data, dir string) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(data), dir)
	if err != nil {
		t.Fatalf("ParseConfig: unexpected error:\n%v", err)
	}
	if cfg == nil {
		t.Fatal("ParseConfig returned nil config and nil error")
	}
	return cfg
}

// parseErrs parses data and returns its ConfigErrors; it fails the test when
// parsing succeeds or the error has another type.
func parseErrs(t *testing.T, data, dir string) ConfigErrors {
	t.Helper()
	cfg, err := ParseConfig([]byte(data), dir)
	if err == nil {
		t.Fatalf("ParseConfig: no error, want one (config %+v)", cfg)
	}
	if cfg != nil {
		t.Errorf("ParseConfig returned a config together with an error")
	}
	var errs ConfigErrors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want ConfigErrors: %v", err, err)
	}
	if len(errs) == 0 {
		t.Fatalf("empty ConfigErrors")
	}
	return errs
}

// problemCase is a config (data) that must be refused with a problem
// whose text contains every part.
type problemCase struct {
	name  string
	data  string
	parts []string
}

// wantProblems checks each case in its own subtest.
func wantProblems(t *testing.T, cases []problemCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantProblem(t, parseErrs(t, tc.data, t.TempDir()), tc.parts...)
		})
	}
}

// wantProblem checks that errs holds one problem whose text contains every part.
func wantProblem(t *testing.T, errs ConfigErrors, parts ...string) {
	t.Helper()
	for _, e := range errs {
		msg := e.Error()
		ok := true
		for _, p := range parts {
			if !strings.Contains(msg, p) {
				ok = false
				break
			}
		}
		if ok {
			return
		}
	}
	t.Errorf("no problem contains all of %q; got:\n%v", parts, errs)
}

func TestExampleConfigParses(t *testing.T) {
	unsetenv(t, "WITTRA_TOKEN")
	cfg, err := LoadConfig("../../config.example.yaml")
	if err != nil {
		t.Fatalf("LoadConfig(config.example.yaml): %v", err)
	}
	if got, want := cfg.Broker.Enabled, true; got != want {
		t.Errorf("Broker.Enabled=%v, want %v", got, want)
	}
	if got, want := cfg.Broker.Listeners, []ListenerConfig{{Type: "tcp", Address: "127.0.0.1:1883"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Broker.Listeners=%+v, want %+v", got, want)
	}
	if !cfg.Broker.AllowAnonymous {
		t.Errorf("Broker.AllowAnonymous=false, want true (no users)")
	}
	if got, want := cfg.Sinks, []SinkConfig{defaultLocalSink()}; !reflect.DeepEqual(got, want) {
		t.Errorf("Sinks=%+v, want %+v", got, want)
	}
	if got, want := cfg.Webhook.Routes, []RouteConfig{{Path: "/wittra", DevicePrefixes: nil}}; len(got) != 1 || got[0].Path != want[0].Path || got[0].Token != "" || len(got[0].DevicePrefixes) != 0 {
		t.Errorf("Webhook.Routes=%+v, want %+v", got, want)
	}
	if got, want := cfg.Buffer.Path, "./data/queue.db"; got != want {
		t.Errorf("Buffer.Path=%q, want %q", got, want)
	}
	if got, want := cfg.Admin.Listen, DefaultAdminListen; got != want {
		t.Errorf("Admin.Listen=%q, want %q", got, want)
	}

	// With the variable set, the route gets the token.
	t.Setenv("WITTRA_TOKEN", "from-env")
	cfg, err = LoadConfig("../../config.example.yaml")
	if err != nil {
		t.Fatalf("LoadConfig with WITTRA_TOKEN: %v", err)
	}
	if got, want := cfg.Webhook.Routes[0].Token, "from-env"; got != want {
		t.Errorf("Routes[0].Token=%q, want %q", got, want)
	}
}

func TestEmptyFileGivesDefaults(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"Empty", ""},
		{"Blank", "\n\n  \n"},
		{"CommentsOnly", "# nothing here\n# gateway:\n"},
		{"DocumentMarker", "---\n"},
		{"Null", "~\n"},
		{"EmptySections", yml("gateway:", "log:", "webhook:", "buffer:", "admin:", "broker:")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mustParse(t, tc.data, t.TempDir())
			if want := DefaultConfig(); !reflect.DeepEqual(got, want) {
				t.Errorf("config=%+v\nwant %+v", got, want)
			}
		})
	}

	d := DefaultConfig()
	checks := []struct {
		name      string
		got, want any
	}{
		{"Log.Level", d.Log.Level, "info"},
		{"Log.Format", d.Log.Format, "json"},
		{"Webhook.Listen", d.Webhook.Listen, "127.0.0.1:8080"},
		{"Webhook.MaxBody", d.Webhook.MaxBody, int64(1 << 20)},
		{"Webhook.Routes", d.Webhook.Routes, []RouteConfig{{Path: "/wittra"}}},
		{"Buffer.Path", d.Buffer.Path, "./data/queue.db"},
		{"Buffer.MaxBytes", d.Buffer.MaxBytes, int64(1 << 30)},
		{"Buffer.MaxAge", d.Buffer.MaxAge, 168 * time.Hour},
		{"Buffer.WhenFull", d.Buffer.WhenFull, "reject"},
		{"Buffer.DedupWindow", d.Buffer.DedupWindow, 24 * time.Hour},
		{"Admin.Listen", d.Admin.Listen, "127.0.0.1:9310"},
		{"Broker.Enabled", d.Broker.Enabled, true},
		{"Broker.Listeners", d.Broker.Listeners, []ListenerConfig{{Type: "tcp", Address: "127.0.0.1:1883"}}},
		{"Broker.AllowAnonymous", d.Broker.AllowAnonymous, true},
		{"Sinks", d.Sinks, []SinkConfig{{Name: "local", Type: "broker", TopicPrefix: "wittra", Values: true, Retain: true, QoS: 1}}},
		{"GatewayIDSet", d.Gateway.ID != "", true},
		{"GatewayIDTopicSafe", strings.ContainsAny(d.Gateway.ID, "/+#\x00"), false},
	}
	for _, c := range checks {
		t.Run("Default"+c.name, func(t *testing.T) {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("%s=%#v, want %#v", c.name, c.got, c.want)
			}
		})
	}
}

func TestStrictDecoding(t *testing.T) {
	wantProblems(t, []problemCase{
		{
			name:  "UnknownTopLevel",
			data:  yml("gateway:", "  id: gw1", "bogus: 1"),
			parts: []string{"line 3: ", "bogus", "unknown key"},
		},
		{
			name:  "UnknownNested",
			data:  yml("gateway:", "  id: gw1", "webhook:", "  listen: 127.0.0.1:8080", "  timout: 5s"),
			parts: []string{"line 5: webhook.timout: unknown key"},
		},
		{
			name:  "UnknownInSequenceItem",
			data:  yml("sinks:", "  - name: local", "    type: broker", "  - name: b", "    type: broker", "    urll: tcp://x:1"),
			parts: []string{"line 6: sinks[1].urll: unknown key"},
		},
		{
			name:  "UnknownInFlowMapping",
			data:  yml("webhook:", "  tls: {cert_file: a, key_fil: b}"),
			parts: []string{"line 2: webhook.tls.key_fil: unknown key"},
		},
		{
			name:  "DuplicateTopLevel",
			data:  yml("log:", "  level: info", "admin:", "  listen: ''", "log:", "  format: json"),
			parts: []string{"line 5: ", "log", "duplicate key", "line 1"},
		},
		{
			name:  "DuplicateNested",
			data:  yml("buffer:", "  path: a.db", "  max_age: 1h", "  path: b.db"),
			parts: []string{"line 4: buffer.path: duplicate key (already defined at line 2)"},
		},
		{
			name:  "WrongShape",
			data:  yml("webhook:", "  routes: /wittra"),
			parts: []string{"line 2: webhook.routes: expected a list"},
		},
		{
			name:  "SyntaxError",
			data:  yml("gateway:", "  id: gw1", "log:", "\tlevel: info"),
			parts: []string{"line 4: tabs are not allowed for indentation"},
		},
		{
			name:  "TwoDocuments",
			data:  yml("gateway: {id: a}", "---", "gateway: {id: b}"),
			parts: []string{"line 2: ", "one YAML document"},
		},
		{
			name:  "ScalarForString",
			data:  yml("log:", "  level: [debug]"),
			parts: []string{"line 2: log.level: expected a single value, got a list"},
		},
		{
			name:  "BadBool",
			data:  yml("broker:", "  enabled: maybe"),
			parts: []string{"line 2: broker.enabled: expected true or false"},
		},
		{
			name:  "BadInt",
			data:  yml("sinks:", "  - name: p", "    type: mqtt", "    url: tcp://h:1883", "    qos: one"),
			parts: []string{"line 5: sinks[0].qos: expected an integer"},
		},
	})
}

func TestDurationsAndSizes(t *testing.T) {
	ok := []struct {
		name string
		data string
		got  func(*Config) any
		want any
	}{
		{"MaxAgeHours", yml("buffer:", "  max_age: 48h"), func(c *Config) any { return c.Buffer.MaxAge }, 48 * time.Hour},
		{"DedupZero", yml("buffer:", "  dedup_window: 0"), func(c *Config) any { return c.Buffer.DedupWindow }, time.Duration(0)},
		{"DedupMixed", yml("buffer:", "  dedup_window: 1h30m"), func(c *Config) any { return c.Buffer.DedupWindow }, 90 * time.Minute},
		{"KiB", yml("webhook:", "  max_body: 512KiB"), func(c *Config) any { return c.Webhook.MaxBody }, int64(512 * 1024)},
		{"MiB", yml("webhook:", "  max_body: 1MiB"), func(c *Config) any { return c.Webhook.MaxBody }, int64(1 << 20)},
		{"GiB", yml("buffer:", "  max_bytes: 2GiB"), func(c *Config) any { return c.Buffer.MaxBytes }, int64(2 << 30)},
		{"SIMegabytes", yml("buffer:", "  max_bytes: 10MB"), func(c *Config) any { return c.Buffer.MaxBytes }, int64(10_000_000)},
		{"Bytes", yml("webhook:", "  max_body: 100B"), func(c *Config) any { return c.Webhook.MaxBody }, int64(100)},
		{"PlainInteger", yml("webhook:", "  max_body: 4096"), func(c *Config) any { return c.Webhook.MaxBody }, int64(4096)},
		{"Fraction", yml("buffer:", "  max_bytes: 1.5GiB"), func(c *Config) any { return c.Buffer.MaxBytes }, int64(3 << 29)},
		{"SpaceBeforeUnit", yml("buffer:", "  max_bytes: 1 GiB"), func(c *Config) any { return c.Buffer.MaxBytes }, int64(1 << 30)},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, tc.data, t.TempDir())
			if got := tc.got(cfg); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}

	wantProblems(t, []problemCase{
		{"BareNumberDuration", yml("gateway: {id: gw}", "", "buffer:", "  max_age: 30"), []string{"line 4: buffer.max_age: ", "no unit"}},
		{"GarbageDuration", yml("buffer:", "  dedup_window: soon"), []string{"line 2: buffer.dedup_window: ", "not a duration"}},
		{"UnknownSizeUnit", yml("buffer:", "  path: q.db", "  max_bytes: 10XB"), []string{"line 3: buffer.max_bytes: ", "unknown unit"}},
		{"NegativeSize", yml("webhook:", "  max_body: -1"), []string{"line 2: webhook.max_body: ", "not a size"}},
		{"ZeroMaxBody", yml("webhook:", "  max_body: 0"), []string{"line 2: webhook.max_body: must be greater than 0"}},
		{"NegativeMaxAge", yml("buffer:", "  max_age: -1h"), []string{"line 2: buffer.max_age: must be greater than 0"}},
	})
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("WGT_ID", "site-b")
	t.Setenv("WGT_EMPTY", "")
	t.Setenv("WGT_AGE", "72h")
	t.Setenv("WGT_PASS", "pa$$w0rd")
	unsetenv(t, "WGT_UNSET")
	unsetenv(t, "WGT_MISSING")

	ok := []struct {
		name string
		data string
		got  func(*Config) any
		want any
	}{
		{"Plain", yml("gateway:", "  id: ${WGT_ID}"), func(c *Config) any { return c.Gateway.ID }, "site-b"},
		{"InsideString", yml("gateway:", "  id: gw-${WGT_ID}-1"), func(c *Config) any { return c.Gateway.ID }, "gw-site-b-1"},
		{"DefaultWhenUnset", yml("log:", "  level: ${WGT_UNSET:-debug}"), func(c *Config) any { return c.Log.Level }, "debug"},
		{"DefaultWhenEmpty", yml("log:", "  level: ${WGT_EMPTY:-warn}"), func(c *Config) any { return c.Log.Level }, "warn"},
		{"SetWinsOverDefault", yml("gateway:", "  id: ${WGT_ID:-other}"), func(c *Config) any { return c.Gateway.ID }, "site-b"},
		{"EmptyDefault", yml("webhook:", "  routes:", "    - path: /w", "      token: ${WGT_UNSET:-}"), func(c *Config) any { return c.Webhook.Routes[0].Token }, ""},
		{"Duration", yml("buffer:", "  max_age: ${WGT_AGE}"), func(c *Config) any { return c.Buffer.MaxAge }, 72 * time.Hour},
		{"SizeDefault", yml("buffer:", "  max_bytes: ${WGT_UNSET:-64MiB}"), func(c *Config) any { return c.Buffer.MaxBytes }, int64(64 << 20)},
		{"ValueNotReexpanded", yml("broker:", "  users:", "    - {username: u, password: '${WGT_PASS}'}"), func(c *Config) any { return c.Broker.Users[0].Password }, "pa$$w0rd"},
		{"DollarDigitKept", yml("broker:", "  users:", "    - {username: u, password: 'ab$5cd'}"), func(c *Config) any { return c.Broker.Users[0].Password }, "ab$5cd"},
		{"DoubleDollarKept", yml("broker:", "  users:", "    - {username: u, password: 'x$$y'}"), func(c *Config) any { return c.Broker.Users[0].Password }, "x$$y"},
		{"BareNameKept", yml("broker:", "  users:", "    - {username: u, password: '$WGT_ID'}"), func(c *Config) any { return c.Broker.Users[0].Password }, "$WGT_ID"},
		{"OtherFormKept", yml("broker:", "  users:", "    - {username: u, password: '${WGT_ID-x}${'}"), func(c *Config) any { return c.Broker.Users[0].Password }, "${WGT_ID-x}${"},
		{"NotInKeysOrComments", yml("# ${WGT_MISSING}", "gateway:", "  id: gw # ${WGT_MISSING}"), func(c *Config) any { return c.Gateway.ID }, "gw"},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, tc.data, t.TempDir())
			if got := tc.got(cfg); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("MissingVariable", func(t *testing.T) {
		data := yml("gateway:", "  id: gw", "sinks:", "  - name: plant", "    type: mqtt", "    url: ${WGT_MISSING}")
		errs := parseErrs(t, data, t.TempDir())
		wantProblem(t, errs, "line 6: sinks[0].url: ", "WGT_MISSING", "not set")
		if len(errs) != 1 {
			t.Errorf("got %d problems, want 1 (no second 'url required'):\n%v", len(errs), errs)
		}
	})
	t.Run("MissingVariableInDuration", func(t *testing.T) {
		errs := parseErrs(t, yml("buffer:", "  max_age: ${WGT_MISSING}"), t.TempDir())
		wantProblem(t, errs, "line 2: buffer.max_age: ", "WGT_MISSING")
	})
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("secrets/broker-pw", "s3cret-pw\n\n")
	tokenPath := write("token", "tok-$5-value\r\n")
	write("c8y-pw", "c8y pass  \n")

	t.Run("RelativeAndAbsolute", func(t *testing.T) {
		data := yml(
			"webhook:",
			"  routes:",
			"    - path: /w",
			"      token_file: "+tokenPath,
			"broker:",
			"  users:",
			"    - username: alice",
			"      password_file: secrets/broker-pw",
			"sinks:",
			"  - name: c8y",
			"    type: cumulocity",
			"    url: mqtts://mqtt.example.com:8883",
			"    tenant: t1",
			"    username: dev",
			"    password_file: ./c8y-pw",
		)
		cfg := mustParse(t, data, dir)
		if got, want := cfg.Webhook.Routes[0].Token, "tok-$5-value"; got != want {
			t.Errorf("Token=%q, want %q", got, want)
		}
		if got, want := cfg.Broker.Users[0].Password, "s3cret-pw"; got != want {
			t.Errorf("user Password=%q, want %q", got, want)
		}
		if got, want := cfg.Sinks[0].Password, "c8y pass  "; got != want {
			t.Errorf("sink Password=%q, want %q (only trailing newlines trimmed)", got, want)
		}
	})

	t.Run("LoadConfigUsesConfigDir", func(t *testing.T) {
		cfgPath := write("config.yaml", yml("broker:", "  users:", "    - username: alice", "      password_file: secrets/broker-pw"))
		cfg, err := LoadConfig(cfgPath)
		if err != nil {
			t.Fatalf("LoadConfig: %v", err)
		}
		if got, want := cfg.Broker.Users[0].Password, "s3cret-pw"; got != want {
			t.Errorf("Password=%q, want %q", got, want)
		}
	})

	bad := []struct {
		name   string
		data   string
		parts  []string
		secret string
	}{
		{
			name:   "BothPasswordAndFile",
			data:   yml("broker:", "  users:", "    - username: alice", "      password: inline-secret-1", "      password_file: secrets/broker-pw"),
			parts:  []string{"line 5: broker.users[0].password_file: ", "not both"},
			secret: "inline-secret-1",
		},
		{
			name:   "BothTokenAndFile",
			data:   yml("webhook:", "  routes:", "    - path: /w", "      token: inline-token-2", "      token_file: token"),
			parts:  []string{"line 5: webhook.routes[0].token_file: ", "not both"},
			secret: "inline-token-2",
		},
		{
			name:   "UnreadableFile",
			data:   yml("sinks:", "  - name: c8y", "    type: cumulocity", "    url: https://t.example.com", "    mode: rest", "    tenant: t1", "    username: u", "    password_file: /nonexistent/wgt-pw"),
			parts:  []string{"line 8: sinks[0].password_file: ", "/nonexistent/wgt-pw"},
			secret: "",
		},
		{
			name:   "EmptyFile",
			data:   yml("webhook:", "  routes:", "    - path: /w", "      token_file: "+write("empty", "\n")),
			parts:  []string{"line 4: webhook.routes[0].token_file: ", "empty"},
			secret: "",
		},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			errs := parseErrs(t, tc.data, dir)
			wantProblem(t, errs, tc.parts...)
			if tc.secret != "" && strings.Contains(errs.Error(), tc.secret) {
				t.Errorf("error reveals the secret %q:\n%v", tc.secret, errs)
			}
			if strings.Contains(errs.Error(), "s3cret-pw") || strings.Contains(errs.Error(), "tok-$5-value") {
				t.Errorf("error reveals a secret file's content:\n%v", errs)
			}
		})
	}
}

func TestValidationReportsEveryProblem(t *testing.T) {
	data := yml(
		"gateway:", // 1
		"  id: gw/1",
		"log:",
		"  level: verbose",
		"webhook:", // 5
		"  routes:",
		"    - path: wittra",
		"    - path: /a",
		"      project: p+q",
		"    - path: /a", // 10
		"buffer:",
		"  when_full: block",
		"broker:",
		"  listeners:",
		"    - {type: tls, address: ':8883'}", // 15
		"  users:",
		"    - username: bob",
		"sinks:",
		"  - name: local",
		"    type: broker", // 20
		"  - name: bad name",
		"    type: mqtt",
		"    url: http://x:1883",
		"    qos: 3",
		"  - name: c8y", // 25
		"    type: cumulocity",
		"    topic_prefix: /wittra",
		"  - name: local",
		"    type: broker",
		"    topic_prefix: a/#", // 30
	)
	errs := parseErrs(t, data, t.TempDir())
	want := [][]string{
		{"line 2: gateway.id: must not contain / + # or NUL"},
		{"line 4: log.level: ", "verbose"},
		{"line 7: webhook.routes[0].path: must start with /"},
		{"line 9: webhook.routes[1].project: "},
		{"line 10: webhook.routes[2].path: duplicate path"},
		{"line 12: buffer.when_full: "},
		{"line 15: broker.listeners[0].cert_file: required for type tls"},
		{"line 17: broker.users[0].password: required"},
		{"line 21: sinks[1].name: "},
		{"line 23: sinks[1].url: must start with tcp://, ssl://, ws:// or wss://"},
		{"line 24: sinks[1].qos: must be 0, 1 or 2"},
		{"line 25: sinks[2].url: required for type cumulocity"}, // missing key: line of the item
		{"line 25: sinks[2].tenant: required"},
		{"line 25: sinks[2].username: required"},
		{"line 25: sinks[2].password: required"},
		{"line 27: sinks[2].topic_prefix: not a key of type cumulocity"},
		{"line 28: sinks[3].name: duplicate sink name"},
		{"line 30: sinks[3].topic_prefix: must not contain + # or NUL"},
	}
	for _, parts := range want {
		wantProblem(t, errs, parts...)
	}
	if len(errs) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(errs), len(want), errs)
	}
	// One problem per line of the combined message, sorted by line.
	if got := strings.Count(errs.Error(), "\n") + 1; got != len(errs) {
		t.Errorf("Error() has %d lines, want %d", got, len(errs))
	}
	for i := 1; i < len(errs); i++ {
		if errs[i-1].Line > errs[i].Line && errs[i].Line != 0 {
			t.Errorf("problems not sorted by line: %d before %d", errs[i-1].Line, errs[i].Line)
		}
	}
}

func TestValidationRules(t *testing.T) {
	wantProblems(t, []problemCase{
		{"NoSinksWithoutBroker", yml("broker:", "  enabled: false"), []string{"sinks: at least one sink is required"}},
		{"ExplicitEmptySinks", yml("sinks: []"), []string{"line 1: sinks: at least one sink is required"}},
		{"BrokerSinkNeedsBroker", yml("broker:", "  enabled: false", "sinks:", "  - name: local", "    type: broker"), []string{"line 5: sinks[0].type: ", "broker.enabled"}},
		{"SinkTypeMissing", yml("sinks:", "  - name: x"), []string{"line 2: sinks[0].type: required"}},
		{"SinkTypeUnknown", yml("sinks:", "  - name: x", "    type: kafka"), []string{"line 3: sinks[0].type: ", "kafka"}},
		{"MQTTURLRequired", yml("sinks:", "  - name: x", "    type: mqtt"), []string{"line 2: sinks[0].url: required"}},
		{"MQTTURLCredentials", yml("sinks:", "  - name: x", "    type: mqtt", "    url: tcp://user:hunter2@h:1883"), []string{"line 4: sinks[0].url: must not contain credentials"}},
		{"MQTTURLUnparsable", yml("sinks:", "  - name: x", "    type: mqtt", "    url: 'tcp://h:port'"), []string{"line 4: sinks[0].url: not a valid URL"}},
		{"C8YBadMode", yml("sinks:", "  - {name: c, type: cumulocity, mode: soap, url: 'https://x', tenant: t, username: u, password: p}"), []string{"line 2: sinks[0].mode: "}},
		{"C8YRestNeedsHTTP", yml("sinks:", "  - {name: c, type: cumulocity, mode: rest, url: 'tcp://x:1883', tenant: t, username: u, password: p}"), []string{"line 2: sinks[0].url: must start with https:// or http://"}},
		{"C8YMQTTNeedsMQTTURL", yml("sinks:", "  - {name: c, type: cumulocity, url: 'https://x', tenant: t, username: u, password: p}"), []string{"line 2: sinks[0].url: must start with tcp://, mqtt://, ssl://, mqtts:// or tls:// (mode mqtt)"}},
		{"EmptyTopicPrefix", yml("sinks:", "  - name: x", "    type: broker", "    topic_prefix: ''"), []string{"line 4: sinks[0].topic_prefix: must not be empty"}},
		{"ListenerType", yml("broker:", "  listeners:", "    - type: quic", "      address: ':1'"), []string{"line 3: broker.listeners[0].type: "}},
		{"ListenerAddress", yml("broker:", "  listeners:", "    - type: tcp"), []string{"line 3: broker.listeners[0].address: must not be empty"}},
		{"DuplicateUser", yml("broker:", "  users:", "    - {username: a, password: x}", "    - {username: a, password: y}"), []string{"line 4: broker.users[1].username: duplicate"}},
		{"EmptyUsername", yml("broker:", "  users:", "    - {password: x}"), []string{"line 3: broker.users[0].username: required"}},
		{"WebhookListenEmpty", yml("webhook:", "  listen: ''"), []string{"line 2: webhook.listen: must not be empty"}},
		{"WebhookListenNoPort", yml("webhook:", "  listen: localhost"), []string{"line 2: webhook.listen: must be host:port"}},
		{"WebhookTLSHalf", yml("webhook:", "  tls:", "    cert_file: c.pem"), []string{"line 2: webhook.tls: cert_file and key_file"}},
		{"LogFormat", yml("log:", "  format: xml"), []string{"line 2: log.format: "}},
		{"DevicePrefix", yml("webhook:", "  routes:", "    - path: /w", "      device_prefixes: [D, 'M#']"), []string{"line 4: webhook.routes[0].device_prefixes[1]: must not contain"}},
		{"DedupNegative", yml("buffer:", "  dedup_window: -1s"), []string{"line 2: buffer.dedup_window: must not be negative"}},
		{"BufferPathEmpty", yml("buffer:", "  path: ''"), []string{"line 2: buffer.path: must not be empty"}},
		{"SameAddress", yml("admin:", "  listen: 127.0.0.1:8080"), []string{"line 2: admin.listen: same address as webhook.listen"}},
		{"SameBrokerAddress", yml("webhook: {listen: ':1883'}", "broker:", "  listeners:", "    - {type: tcp, address: ':1883'}"), []string{"line 4: broker.listeners[0].address: same address as webhook.listen"}},
	})
}

func TestSecretsNeverInErrors(t *testing.T) {
	const secret = "Sup3r-S3cret-Value"
	t.Setenv("WGT_SECRET", secret)
	for _, tc := range []struct{ name, data string }{
		{"TokenWithBadFile", yml("webhook:", "  routes:", "    - path: /w", "      token: "+secret, "      token_file: /nonexistent/file")},
		{"TokenFromEnvWithBadFile", yml("webhook:", "  routes:", "    - path: /w", "      token: ${WGT_SECRET}", "      token_file: /nonexistent/file")},
		{"PasswordInURL", yml("sinks:", "  - name: p", "    type: mqtt", "    url: tcp://user:"+secret+"@host:1883")},
		{"PasswordInBadURL", yml("sinks:", "  - name: p", "    type: mqtt", "    url: 'tcp://user:"+secret+"@host:port'")},
		{"PasswordInWrongShape", yml("broker:", "  users: "+secret)},
		{"PasswordAsList", yml("broker:", "  users:", "    - username: u", "      password: ["+secret+"]")},
		{"PasswordWithOtherProblems", yml("broker:", "  users:", "    - {username: '', password: "+secret+"}", "sinks:", "  - {name: c, type: cumulocity, password: "+secret+"}")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := parseErrs(t, tc.data, t.TempDir())
			if msg := errs.Error(); strings.Contains(msg, secret) || strings.Contains(msg, secret[:7]) {
				t.Errorf("error reveals the secret:\n%s", msg)
			}
		})
	}
}

func TestAllowAnonymousDefault(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want bool
	}{
		{"NoUsers", yml("broker:", "  enabled: true"), true},
		{"EmptyUsers", yml("broker:", "  users: []"), true},
		{"WithUsers", yml("broker:", "  users:", "    - {username: a, password: x}"), false},
		{"ExplicitTrueWithUsers", yml("broker:", "  allow_anonymous: true", "  users:", "    - {username: a, password: x}"), true},
		{"ExplicitFalseWithoutUsers", yml("broker:", "  allow_anonymous: false"), false},
		{"NullMeansDefault", yml("broker:", "  allow_anonymous:", "  users:", "    - {username: a, password: x}"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, tc.data, t.TempDir())
			if got := cfg.Broker.AllowAnonymous; got != tc.want {
				t.Errorf("AllowAnonymous=%v, want %v", got, tc.want)
			}
		})
	}
}

func TestAdminListen(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want string
	}{
		{"Absent", yml("log:", "  level: info"), DefaultAdminListen},
		{"SectionWithoutKey", yml("admin: {}"), DefaultAdminListen},
		{"ExplicitEmpty", yml("admin:", `  listen: ""`), ""},
		{"ExplicitNull", yml("admin:", "  listen:"), ""},
		{"EmptyFromEnvDefault", yml("admin:", "  listen: ${WGT_UNSET_ADMIN:-}"), ""},
		{"Set", yml("admin:", "  listen: 0.0.0.0:9999"), "0.0.0.0:9999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unsetenv(t, "WGT_UNSET_ADMIN")
			cfg := mustParse(t, tc.data, t.TempDir())
			if got := cfg.Admin.Listen; got != tc.want {
				t.Errorf("Admin.Listen=%q, want %q", got, tc.want)
			}
		})
	}
	t.Run("BadAddress", func(t *testing.T) {
		wantProblem(t, parseErrs(t, yml("admin:", "  listen: nope"), t.TempDir()), "line 2: admin.listen: must be host:port")
	})
}

func TestDerivedDefaults(t *testing.T) {
	data := yml(
		"gateway:",
		"  id: gw7",
		"webhook:",
		"  routes: []",
		"sinks:",
		"  - name: plant",
		"    type: mqtt",
		"    url: ssl://broker.plant:8883",
		"  - name: c8y",
		"    type: cumulocity",
		"    url: mqtts://mqtt.example.com:8883",
		"    tenant: t1",
		"    username: device_gw7",
		"    password: pw",
		"  - name: local",
		"    type: broker",
	)
	cfg := mustParse(t, data, t.TempDir())
	checks := []struct {
		name      string
		got, want any
	}{
		{"DefaultRouteForEmptyList", cfg.Webhook.Routes, []RouteConfig{{Path: "/wittra"}}},
		{"MQTTClientID", cfg.Sinks[0].ClientID, "wittra-gw7"},
		{"MQTTQoS", cfg.Sinks[0].QoS, 1},
		{"MQTTTopicPrefix", cfg.Sinks[0].TopicPrefix, "wittra"},
		{"MQTTValues", cfg.Sinks[0].Values, false},
		{"MQTTRetain", cfg.Sinks[0].Retain, false},
		{"C8YMode", cfg.Sinks[1].Mode, "mqtt"},
		{"C8YDeviceName", cfg.Sinks[1].DeviceName, "Wittra gateway gw7"},
		{"BrokerSinkValues", cfg.Sinks[2].Values, false},
		{"SinkCount", len(cfg.Sinks), 3},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("got %#v, want %#v", c.got, c.want)
			}
		})
	}

	t.Run("PortZeroNeverClashes", func(t *testing.T) {
		cfg := mustParse(t, yml("webhook: {listen: '127.0.0.1:0'}", "admin: {listen: '127.0.0.1:0'}", "broker: {listeners: [{type: tcp, address: '127.0.0.1:0'}]}"), t.TempDir())
		if got := cfg.Broker.Listeners[0].Address; got != "127.0.0.1:0" {
			t.Errorf("listener address=%q, want 127.0.0.1:0", got)
		}
	})
	t.Run("ExplicitEmptyListeners", func(t *testing.T) {
		cfg := mustParse(t, yml("broker:", "  listeners: []"), t.TempDir())
		if len(cfg.Broker.Listeners) != 0 {
			t.Errorf("Listeners=%+v, want none", cfg.Broker.Listeners)
		}
	})
	t.Run("BrokerDisabledWithOwnSink", func(t *testing.T) {
		cfg := mustParse(t, yml("broker:", "  enabled: false", "sinks:", "  - {name: p, type: mqtt, url: 'tcp://h:1883'}"), t.TempDir())
		if len(cfg.Sinks) != 1 || cfg.Sinks[0].Name != "p" {
			t.Errorf("Sinks=%+v, want only p", cfg.Sinks)
		}
	})
	t.Run("EmptyGatewayIDMeansHostName", func(t *testing.T) {
		cfg := mustParse(t, yml("gateway:", "  id: ''"), t.TempDir())
		if got, want := cfg.Gateway.ID, DefaultConfig().Gateway.ID; got != want {
			t.Errorf("Gateway.ID=%q, want %q", got, want)
		}
	})
}

func TestSanitizeID(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"gw1", "gw1"},
		{"gw1.site.example", "gw1.site.example"},
		{"my host/#+", "my-host"},
		{"", ""},
		{"a:b", "a-b"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := sanitizeID(tc.in); got != tc.want {
				t.Errorf("sanitizeID(%q)=%q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestConfigErrorFormat(t *testing.T) {
	base := errors.New("boom")
	for _, tc := range []struct {
		name string
		err  *ConfigError
		want string
	}{
		{"Full", &ConfigError{Line: 14, Field: "sinks[1].url", Err: base}, "line 14: sinks[1].url: boom"},
		{"NoLine", &ConfigError{Field: "sinks", Err: base}, "sinks: boom"},
		{"NoField", &ConfigError{Line: 3, Err: base}, "line 3: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error()=%q, want %q", got, tc.want)
			}
			if !errors.Is(tc.err, base) {
				t.Errorf("errors.Is(err, base)=false, want true")
			}
		})
	}
	t.Run("ListJoinsAndUnwraps", func(t *testing.T) {
		es := ConfigErrors{{Line: 1, Field: "a", Err: base}, {Field: "b", Err: errors.New("bad")}}
		if got, want := es.Error(), "line 1: a: boom\nb: bad"; got != want {
			t.Errorf("Error()=%q, want %q", got, want)
		}
		var err error = es
		if !errors.Is(err, base) {
			t.Errorf("errors.Is(ConfigErrors, base)=false, want true")
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "a" {
			t.Errorf("errors.As gave %+v, want the first problem", ce)
		}
	})
}

func TestLoadConfigReadError(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || !strings.HasPrefix(err.Error(), "read config: ") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err=%v, want read config: ... wrapping os.ErrNotExist", err)
	}
}

func TestRedacted(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Webhook.Routes[0].Token = "tok"
	cfg.Broker.Users = []UserConfig{{Username: "u", Password: "pw"}}
	cfg.Sinks[0].Password = "spw"
	r := cfg.Redacted()
	if r.Webhook.Routes[0].Token != "REDACTED" || r.Broker.Users[0].Password != "REDACTED" || r.Sinks[0].Password != "REDACTED" {
		t.Errorf("Redacted kept a secret: %+v", r)
	}
	if cfg.Webhook.Routes[0].Token != "tok" || cfg.Broker.Users[0].Password != "pw" || cfg.Sinks[0].Password != "spw" {
		t.Errorf("Redacted modified the original: %+v", cfg)
	}
}

func TestBrokerACLConfig(t *testing.T) {
	const hash = "$2y$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hash"), []byte(hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := yml(
		"broker:",
		"  listeners:",
		"    - {type: tls, address: ':8883', cert_file: b.crt, key_file: b.key, client_ca_file: ca.pem}",
		"    - type: websocket",
		"      address: 127.0.0.1:8083",
		"      allowed_origins: [https://dash.example.com, 'http://10.0.0.5:8080']",
		"  users:",
		"    - {username: reader, password: r}",
		"    - {username: p1, password: '"+hash+"', subscribe: [wittra/P1/#]}",
		"    - {username: writer, password_file: hash, publish: true}",
		"    - {username: site, password: s, publish: true, publish_topics: [site/#, 'a/+/c'], subscribe: []}",
		"sinks:",
		"  - {name: local, type: broker}",
		"  - {name: b, type: broker, topic_prefix: site/b}",
		"  - {name: p, type: mqtt, url: 'tcp://h:1883', topic_prefix: remote}",
	)
	cfg := mustParse(t, data, dir)
	wantListeners := []ListenerConfig{
		{Type: "tls", Address: ":8883", CertFile: "b.crt", KeyFile: "b.key", ClientCAFile: "ca.pem"},
		{Type: "websocket", Address: "127.0.0.1:8083", AllowedOrigins: []string{"https://dash.example.com", "http://10.0.0.5:8080"}},
	}
	if !reflect.DeepEqual(cfg.Broker.Listeners, wantListeners) {
		t.Errorf("Listeners=%+v\nwant %+v", cfg.Broker.Listeners, wantListeners)
	}
	wantUsers := []UserConfig{
		{Username: "reader", Password: "r", Subscribe: []string{"#"}},
		{Username: "p1", Password: hash, Subscribe: []string{"wittra/P1/#"}},
		{Username: "writer", Password: hash, Subscribe: []string{"#"}, Publish: true, PublishTopics: []string{"#"}},
		{Username: "site", Password: "s", Subscribe: []string{}, Publish: true, PublishTopics: []string{"site/#", "a/+/c"}},
	}
	if !reflect.DeepEqual(cfg.Broker.Users, wantUsers) {
		t.Errorf("Users=%+v\nwant %+v", cfg.Broker.Users, wantUsers)
	}

	bc := brokerConfig(cfg)
	if got, want := bc.ReservedPrefixes, []string{"wittra", "site/b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ReservedPrefixes=%v, want %v (broker sinks only)", got, want)
	}
	if l := bc.Listeners[0]; l.ClientCAFile != "ca.pem" || l.CertFile != "b.crt" {
		t.Errorf("broker listener 0=%+v", l)
	}
	if l := bc.Listeners[1]; !reflect.DeepEqual(l.AllowedOrigins, wantListeners[1].AllowedOrigins) {
		t.Errorf("broker listener 1=%+v", l)
	}
	if u := bc.Users[3]; !u.Publish || !reflect.DeepEqual(u.PublishTopics, wantUsers[3].PublishTopics) ||
		u.Subscribe == nil || len(u.Subscribe) != 0 || u.Password != "s" {
		t.Errorf("broker user 3=%+v", u)
	}
	if u := bc.Users[1]; !reflect.DeepEqual(u.Subscribe, []string{"wittra/P1/#"}) || u.Publish || u.PublishTopics != nil {
		t.Errorf("broker user 1=%+v", u)
	}

	r := cfg.Redacted()
	r.Broker.Users[3].PublishTopics[0] = "changed"
	r.Broker.Listeners[1].AllowedOrigins[0] = "changed"
	if cfg.Broker.Users[3].PublishTopics[0] != "site/#" || cfg.Broker.Listeners[1].AllowedOrigins[0] != "https://dash.example.com" {
		t.Errorf("Redacted shares lists with the original")
	}
	if r.Broker.Users[1].Password != "REDACTED" {
		t.Errorf("Redacted kept a bcrypt hash: %q", r.Broker.Users[1].Password)
	}
}

func TestBrokerACLConfigErrors(t *testing.T) {
	const badHash = "$2b$10$tooShortToBeAHash"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "badhash"), []byte(badHash), 0o600); err != nil {
		t.Fatal(err)
	}
	data := yml(
		"broker:", // 1
		"  listeners:",
		"    - {type: tcp, address: ':1883', client_ca_file: ca.pem}",
		"    - {type: websocket, address: ':8083', client_ca_file: ca.pem}",
		"    - {type: tls, address: ':8883', cert_file: c, key_file: k, allowed_origins: ['https://a']}", // 5
		"    - type: websocket",
		"      address: ':8084'",
		"      allowed_origins:",
		"        - https://ok.example.com",
		"        - https://slash.example.com/", // 10
		"        - 'null'",
		"        - ftp://x.example.com",
		"        - https://x.example.com/path",
		"        - '*'",
		"        - ''", // 15
		"        - https://user@x.example.com",
		"  users:",
		"    - {username: a, password: x, subscribe: [ok/#, 'a/#/b', 'a+', '$share/g/#']}",
		"    - {username: b, password: x, publish_topics: [site/#]}",
		"    - {username: c, password: x, publish: true, publish_topics: []}", // 20
		"    - {username: d, password: x, publish: true, publish_topics: ['#', 'x/#/y']}",
		"    - {username: e, password: '"+badHash+"'}",
		"    - username: f",
		"      password_file: badhash",
		"    - {username: g, password: x, subscribe: wittra/#}", // 25
	)
	errs := parseErrs(t, data, dir)
	want := [][]string{
		{"line 25: broker.users[6].subscribe: expected a list"},
	}
	for _, parts := range want {
		wantProblem(t, errs, parts...)
	}
	// A shape error stops decoding; without it every other problem shows.
	data = strings.Replace(data, "subscribe: wittra/#", "subscribe: [wittra/#]", 1)
	errs = parseErrs(t, data, dir)
	want = [][]string{
		{"line 3: broker.listeners[0].client_ca_file: needs type tls, or websocket with cert_file and key_file"},
		{"line 4: broker.listeners[1].client_ca_file: needs TLS"},
		{"line 5: broker.listeners[2].allowed_origins: only for type websocket"},
		{"line 10: broker.listeners[3].allowed_origins[1]: ", "no path"},
		{"line 11: broker.listeners[3].allowed_origins[2]: ", "not accepted"},
		{"line 12: broker.listeners[3].allowed_origins[3]: ", "scheme must be http or https"},
		{"line 13: broker.listeners[3].allowed_origins[4]: ", "no path"},
		{"line 14: broker.listeners[3].allowed_origins[5]: ", "not accepted"},
		{"line 15: broker.listeners[3].allowed_origins[6]: must not be empty"},
		{"line 16: broker.listeners[3].allowed_origins[7]: "},
		{"line 18: broker.users[0].subscribe[1]: not a valid topic filter: '#' must be the last level"},
		{"line 18: broker.users[0].subscribe[2]: not a valid topic filter: '+' and '#' must fill a whole level"},
		{"line 18: broker.users[0].subscribe[3]: not a valid topic filter: ", "$share"},
		{"line 19: broker.users[1].publish_topics: needs publish: true"},
		{"line 20: broker.users[2].publish_topics: empty: to forbid publishing, set publish: false"},
		{"line 21: broker.users[3].publish_topics[1]: not a valid topic filter"},
		{"line 22: broker.users[4].password: ", "bcrypt"},
		{"line 24: broker.users[5].password_file: ", "bcrypt"},
	}
	for _, parts := range want {
		wantProblem(t, errs, parts...)
	}
	if len(errs) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(errs), len(want), errs)
	}
	if strings.Contains(errs.Error(), "tooShort") {
		t.Errorf("error reveals a password:\n%v", errs)
	}
}

func TestBrokerTCPWithCert(t *testing.T) {
	errs := parseErrs(t, yml("broker:", "  listeners:", "    - {type: tcp, address: ':1883', cert_file: c, key_file: k}"), t.TempDir())
	wantProblem(t, errs, "line 3: broker.listeners[0].cert_file: needs type tls")
}

// systemd's LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY; *_file
// keys name them through the variable.
func TestSecretFileFromSystemdCredentials(t *testing.T) {
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "mqtt-password"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	cfg, err := ParseConfig([]byte(`sinks:
  - name: plant
    type: mqtt
    url: tcp://127.0.0.1:1883
    username: gw
    password_file: ${CREDENTIALS_DIRECTORY}/mqtt-password
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Sinks[0].Password; got != "s3cret" {
		t.Fatalf("password from the credential file = %q", got)
	}
}

func TestSinkRetainBounds(t *testing.T) {
	sink := func(extra string) string {
		return yml("sinks:", "  - {name: local, type: broker, retain: true"+extra+"}")
	}
	cfg, err := ParseConfig([]byte(sink(", retain_max_age: 48h, retain_max_topics: 5000, retain_max_bytes: 16MiB")), t.TempDir())
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	s := cfg.Sinks[0]
	if s.RetainMaxAge != 48*time.Hour || s.RetainMaxTopics != 5000 || s.RetainMaxBytes != 16<<20 {
		t.Fatalf("bounds = %v %d %d, want 48h 5000 16MiB", s.RetainMaxAge, s.RetainMaxTopics, s.RetainMaxBytes)
	}
	for _, tc := range []struct{ name, yaml, field, want string }{
		{"ShortAge", sink(", retain_max_age: 10s"), "sinks[0].retain_max_age", "at least 1m"},
		{"NegativeAge", sink(", retain_max_age: -1h"), "sinks[0].retain_max_age", "negative"},
		{"SmallCap", sink(", retain_max_topics: 10"), "sinks[0].retain_max_topics", "at least 100"},
		{"NegativeBytes", sink(", retain_max_bytes: -5"), "sinks[0].retain_max_bytes", ""},
		{"NotBroker", yml("sinks:", "  - {name: plant, type: mqtt, url: 'tcp://h:1883', retain_max_age: 1h}"), "sinks[0].retain_max_age", "only for type broker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml), t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig = %v, want an error on %s containing %q", err, tc.field, tc.want)
			}
		})
	}
}

// A key that belongs to another sink type is an error with its line, not
// silently ignored; so is a queue too small to hold anything.
func TestSinkKeysBelongToTheirType(t *testing.T) {
	cfgText := `buffer: {max_bytes: 5}
sinks:
  - {name: local, type: broker, url: "tcp://x:1883", qos: 1}
  - {name: plant, type: mqtt, url: "tcp://x:1883", tenant: t1, mode: rest}
  - name: c8y
    type: cumulocity
    url: https://t.example.com
    mode: rest
    tenant: t1
    username: u
    password: p
    qos: 1
    retain: true
    topic_prefix: x
`
	_, err := ParseConfig([]byte(cfgText), t.TempDir())
	if err == nil {
		t.Fatal("foreign keys accepted")
	}
	for _, want := range []string{
		"line 1: buffer.max_bytes: must be at least 64KiB",
		"line 3: sinks[0].url: not a key of type broker",
		"line 3: sinks[0].qos: not a key of type broker",
		"line 4: sinks[1].tenant: only for type cumulocity",
		"line 4: sinks[1].mode: only for type cumulocity",
		"line 12: sinks[2].qos: not a key of type cumulocity",
		"line 13: sinks[2].retain: not a key of type cumulocity",
		"line 14: sinks[2].topic_prefix: not a key of type cumulocity",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}
