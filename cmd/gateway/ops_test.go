package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsMoveAndReadinessFlips(t *testing.T) {
	tg := startTestGateway(t, t.TempDir(), map[string]string{
		"admin":   "admin: {listen: 127.0.0.1:0}",
		"webhook": "webhook: {listen: 127.0.0.1:0, routes: [{path: /wittra, token: tok}]}",
	})
	admin := "http://" + tg.g.adminLn.Addr().String()
	if code, _ := httpGet(t, admin+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	if code, body := httpGet(t, admin+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	sub := testutil.Subscribe(t, tg.broker, "wittra/+/+/data", 1, testutil.SubscriberOptions{})
	for i := range 3 {
		req, _ := http.NewRequest("POST", tg.webhook+"/wittra", strings.NewReader(`{"deviceId":"D1","payloadId":"m`+strconv.Itoa(i)+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("auth-token", "tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("post %d: %v %v", i, err, resp)
		}
		resp.Body.Close()
	}
	tg.post(t, "/wittra", `{"deviceId":"D1"}`) // no token: 401
	for range 3 {
		sub.Next(t, 5*time.Second)
	}
	var text string
	testutil.Poll(5*time.Second, func() bool { // checked below
		_, text = httpGet(t, admin+"/metrics")
		return metricValue(text, `wittra_gateway_queue_depth_messages{sink="local"}`) == 0
	})
	for name, want := range map[string]float64{
		`wittra_gateway_messages_accepted_total{route="/wittra"}`:           3,
		`wittra_gateway_webhook_requests_total{code="200",route="/wittra"}`: 3,
		`wittra_gateway_webhook_requests_total{code="401",route="/wittra"}`: 1,
		`wittra_gateway_sink_deliveries_total{sink="local"}`:                3,
		`wittra_gateway_queue_depth_messages{sink="local"}`:                 0,
		`wittra_gateway_queue_oldest_age_seconds{sink="local"}`:             0,
		`wittra_gateway_broker_clients`:                                     1,
		`wittra_gateway_clock_trusted`:                                      1,
		`wittra_gateway_clock_steps_total`:                                  0,
	} {
		if got := metricValue(text, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for _, name := range []string{"wittra_gateway_build_info", "process_resident_memory_bytes", "wittra_gateway_queue_file_bytes", "wittra_gateway_queue_dedup_keys"} {
		if !strings.Contains(text, name) {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if metricValue(text, `wittra_gateway_sink_last_success_timestamp_seconds{sink="local"}`) < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success time not recent")
	}
	// The queue going away makes the gateway unready.
	tg.g.queue.Close()
	if code, body := httpGet(t, admin+"/readyz"); code != 503 || !strings.Contains(body, "queue") {
		t.Fatalf("/readyz with a closed queue = %d %s, want 503", code, body)
	}
	if code, _ := httpGet(t, admin+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d, want 200 while the process serves", code)
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("pw-SECRET-file\n"), 0o600)
	t.Setenv("ROUTE_TOKEN", "tok-SECRET-env")
	config := `gateway: {id: gw}
log: {level: debug}
webhook:
  listen: 127.0.0.1:0
  routes: [{path: /wittra, token: "${ROUTE_TOKEN}"}]
buffer: {path: ` + filepath.Join(dir, "q.db") + `}
admin: {listen: ""}
broker:
  listeners: [{type: tcp, address: 127.0.0.1:0}]
  users: [{username: u1, password: pw-SECRET-inline, publish: true}, {username: u2, password_file: pw}]
sinks: [{name: local, type: broker}]
`
	path := filepath.Join(dir, "config.yaml")
	os.WriteFile(path, []byte(config), 0o600)
	run := runInProc(t, path, testTiming)
	g := run.g
	url := "http://" + g.webhookLn.Addr().String() + "/wittra"
	for _, tok := range []string{"tok-SECRET-env", "wrong-SECRET-guess", ""} {
		req, _ := http.NewRequest("POST", url, strings.NewReader(`{"deviceId":"D1"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("auth-token", tok)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	for _, pw := range []string{"pw-SECRET-inline", "bad-SECRET-pw"} {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + g.brokerSrv.Addrs()[0]).SetUsername("u1").SetPassword(pw).SetConnectRetry(false))
		if tok := c.Connect(); tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
			c.Disconnect(50)
		}
	}
	if err := run.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	out := run.log.String()
	if !strings.Contains(out, "webhook request refused") {
		t.Fatalf("the debug log did not record the refused request; log:\n%s", out)
	}
	if strings.Contains(out, "SECRET") {
		t.Fatalf("a secret reached the log:\n%s", out)
	}
	// check-config with a broken file names lines, never secrets.
	os.WriteFile(path, []byte(strings.Replace(config, "listen: 127.0.0.1:0\n  routes", "listen: bogus\n  routes", 1)+"bogus_key: 1\n"), 0o600)
	var stdout bytes.Buffer
	var stderr bytes.Buffer
	err := (&Main{Stdout: &stdout, Stderr: &stderr}).Run(context.Background(), []string{"check-config", "-config", path})
	if exitCode(err) != exitUsage || !strings.Contains(stderr.String(), "line ") {
		t.Fatalf("check-config of a bad file: exit %d, stderr %q", exitCode(err), stderr.String())
	}
	if strings.Contains(stderr.String()+stdout.String(), "SECRET") {
		t.Fatalf("check-config printed a secret: %s", stderr.String())
	}
}

func TestJournaldFormatCarriesPriority(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(LogConfig{Level: "debug", Format: "journald"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug().Msg("d")
	log.Info().Msg("i")
	log.Warn().Msg("w")
	log.Error().Msg("e")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{"<7>{", "<6>{", "<4>{", "<3>{"}
	if len(lines) != len(want) {
		t.Fatalf("lines = %q", lines)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

func TestEmptyLogLevelIsInfoNotSilent(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(LogConfig{}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug().Msg("hidden")
	log.Error().Msg("shown")
	if got := buf.String(); !strings.Contains(got, "shown") || strings.Contains(got, "hidden") {
		t.Fatalf("log = %q, want errors shown and debug hidden", got)
	}
	if log.GetLevel() != zerolog.InfoLevel {
		t.Fatalf("level = %v, want info", log.GetLevel())
	}
}

func TestExampleConfigPassesCheckConfig(t *testing.T) {
	var out bytes.Buffer
	err := (&Main{Stdout: &out, Stderr: &out}).Run(context.Background(), []string{"check-config", "-config", "../../config.example.yaml"})
	if err != nil {
		t.Fatalf("check-config config.example.yaml: %v\n%s", err, out.String())
	}
}

func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../systemd/wittra-gateway.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"Type=notify", "WatchdogSec=", "User=wittra-gateway", "StateDirectory=wittra-gateway",
		"ConfigurationDirectory=wittra-gateway", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes", "RestrictAddressFamilies=",
		"SystemCallFilter=@system-service", "CapabilityBoundingSet=\n", "Restart=always",
		"EnvironmentFile=-/etc/wittra-gateway/env",
		"ExecStart=/usr/bin/wittra-gateway run -config /etc/wittra-gateway/config.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID",
	} {
		if !bytes.Contains(unit, []byte(line)) {
			t.Errorf("unit lacks %q", line)
		}
	}
	m := regexp.MustCompile(`TimeoutStopSec=(\d+)s`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("unit has no TimeoutStopSec=<n>s")
	}
	if n, _ := strconv.Atoi(string(m[1])); time.Duration(n)*time.Second <= shutdownBudget {
		t.Errorf("TimeoutStopSec=%ds must exceed the %v shutdown budget", n, shutdownBudget)
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: only the text was checked")
	}
	// verify wants the ExecStart binary to exist: point it at a real one.
	bin, _ := os.Executable()
	dir := t.TempDir()
	tmp := filepath.Join(dir, "wittra-gateway.service")
	os.WriteFile(tmp, bytes.ReplaceAll(unit, []byte("/usr/bin/wittra-gateway"), []byte(bin)), 0o644)
	if out, err := exec.Command(sa, "verify", tmp).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(sa, "security", "--offline=true", tmp).CombinedOutput()
	if err != nil {
		t.Logf("systemd-analyze security --offline unavailable: %v", err)
		return
	}
	m = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure figure in:\n%s", out)
	}
	if v, _ := strconv.ParseFloat(string(m[1]), 64); v > 2.0 {
		t.Fatalf("systemd-analyze security exposure %v, want <= 2.0", v)
	}
	t.Logf("systemd-analyze security exposure: %s", m[1])
}
