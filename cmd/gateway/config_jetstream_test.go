package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
)

func TestJetStreamSinkConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := mustParse(t, yml(
		"sinks:",
		"  - name: central",
		"    type: jetstream",
		"    urls: [nats://n1:4222, 'tls://n2:4222']",
		"    token_file: tok",
		"    subject_prefix: wittra.site-a",
		"    tls: {ca_file: /etc/ca.pem}",
		"    stream:",
		"      name: WITTRA_ALL",
		"      subjects: [wittra.>]",
		"      replicas: 3",
		"      max_age: 72h",
		"      duplicate_window: 30m",
	), dir)
	s := cfg.Sinks[0]
	want := JetStreamSinkConfig{
		URLs:          []string{"nats://n1:4222", "tls://n2:4222"},
		Token:         "s3cret-token",
		SubjectPrefix: "wittra.site-a",
		Stream:        JetStreamStreamConfig{Name: "WITTRA_ALL", Subjects: []string{"wittra.>"}, Replicas: 3, MaxAge: 72 * time.Hour, DuplicateWindow: 30 * time.Minute},
	}
	if !reflect.DeepEqual(s.JetStream, want) {
		t.Errorf("JetStream = %+v\nwant        %+v", s.JetStream, want)
	}
	if got := cfg.Redacted().Sinks[0].JetStream.Token; got != "REDACTED" {
		t.Errorf("redacted token = %q", got)
	}
	if cfg.Sinks[0].JetStream.Token != "s3cret-token" {
		t.Error("Redacted changed the original")
	}
	jc := jetstreamConfig(cfg, s)
	if jc.GatewayID != cfg.Gateway.ID || jc.Token != "s3cret-token" || jc.TLS.CAFile != "/etc/ca.pem" || jc.Stream.Replicas != 3 {
		t.Errorf("jetstreamConfig = %+v", jc)
	}

	// Minimal: defaults, creds_file relative to the config's directory.
	cfg = mustParse(t, yml("sinks:", "  - {name: c, type: jetstream, urls: [nats://n1], creds_file: site.creds}"), dir)
	if j := cfg.Sinks[0].JetStream; j.SubjectPrefix != "wittra" || j.CredsFile != filepath.Join(dir, "site.creds") || j.Stream.Replicas != 0 {
		t.Errorf("minimal = %+v", j)
	}
}

func TestJetStreamSinkValidation(t *testing.T) {
	wantProblems(t, []problemCase{
		{"NoURLs", yml("sinks:", "  - {name: c, type: jetstream}"), []string{"line 2: sinks[0].urls: required for type jetstream"}},
		{"SingularURL", yml("sinks:", "  - {name: c, type: jetstream, url: 'nats://x'}"), []string{"sinks[0].url: type jetstream takes urls"}},
		{"TopicPrefix", yml("sinks:", "  - {name: c, type: jetstream, urls: [nats://x], topic_prefix: a/b}"), []string{"sinks[0].topic_prefix: type jetstream takes subject_prefix"}},
		{"BadURL", yml("sinks:", "  - name: c", "    type: jetstream", "    urls: [nats://x, 'http://y']"), []string{"line 4: sinks[0].urls[1]: must start with nats://"}},
		{"TwoAuths", yml("sinks:", "  - {name: c, type: jetstream, urls: [nats://x], username: u, password: p, token: t}"), []string{"sinks[0]: set one of username/password, token or creds_file"}},
		{"BadPrefix", yml("sinks:", "  - name: c", "    type: jetstream", "    urls: [nats://x]", "    subject_prefix: 'a.>'"), []string{"line 5: sinks[0].subject_prefix: must not contain wildcards"}},
		{"NotCaptured", yml("sinks:", "  - name: c", "    type: jetstream", "    urls: [nats://x]", "    stream: {subjects: [other.>]}"), []string{"sinks[0].stream.subjects: must capture wittra.>"}},
		{"Replicas", yml("sinks:", "  - name: c", "    type: jetstream", "    urls: [nats://x]", "    stream: {replicas: 9}"), []string{"sinks[0].stream.replicas: must be between 1 and 5"}},
		{"DupWindow", yml("sinks:", "  - name: c", "    type: jetstream", "    urls: [nats://x]", "    stream: {max_age: 1m, duplicate_window: 1h}"), []string{"sinks[0].stream.duplicate_window: must not exceed max_age"}},
		{"StreamName", yml("sinks:", "  - name: c", "    type: jetstream", "    urls: [nats://x]", "    stream: {name: a.b}"), []string{"sinks[0].stream.name: must not contain"}},
		{"KeysOnOtherType", yml("sinks:", "  - {name: m, type: mqtt, url: 'tcp://x', urls: [nats://x]}"), []string{"sinks[0].urls: only for type jetstream"}},
	})
	errs := parseErrs(t, yml("sinks:", "  - {name: c, type: jetstream, urls: ['nats://u:Sup3rS3cret@x'], token: t}", "  - {name: d, type: nope}"), t.TempDir())
	if strings.Contains(errs.Error(), "Sup3rS3cret") {
		t.Errorf("error echoes a secret: %v", errs)
	}
	wantProblem(t, errs, "sinks[1].type: must be broker, subscriber, mqtt, cumulocity or jetstream")
}

// The commented jetstream sink of config.example.yaml is a valid config.
func TestJetStreamExampleBlockParses(t *testing.T) {
	b := testutil.ReadFile(t, "../../config.example.yaml")
	i := strings.Index(string(b), "  # - name: central\n")
	if i < 0 {
		t.Fatal("no jetstream example in config.example.yaml")
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(b[i:]), "\n"), "\n") {
		if !strings.HasPrefix(l, "  #") {
			break
		}
		lines = append(lines, strings.Replace(l, "# ", "", 1))
	}
	cfg := mustParse(t, "sinks:\n"+strings.Join(lines, "\n")+"\n", t.TempDir())
	j := cfg.Sinks[0].JetStream
	if cfg.Sinks[0].Type != "jetstream" || len(j.URLs) != 3 || j.Stream.Replicas != 3 || j.Stream.DuplicateWindow != 10*time.Minute {
		t.Errorf("example sink = %+v", cfg.Sinks[0])
	}
}
