package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks/cumulocity/c8yfake"
	"wittra-gateway/wittraapi/wittrafake"
)

const (
	namesOrg     = "q7TgH2kLp0ZxV4bN9mRs"
	namesKey     = "0123456789abcdef0123456789abcdef0123456789abcdef"
	namesProject = "P4nB8vQ2wE6rT1yU3iOa" // f1_data_tag.json's
	namesDevice  = "D00124B001E2A1B2C"
)

// The whole path of a name: the gateway asks the Wittra API (fake) about
// the project it saw in a webhook, the Cumulocity child is renamed to the
// Wittra name, the name is edited in Wittra and follows, and `devices`
// shows the device with its name and values, from the running gateway and
// from the queue file after the stop.
func TestDeviceNamesThroughTheGateway(t *testing.T) {
	api, err := wittrafake.Start(namesOrg, namesKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	api.SetDevices(namesProject, []map[string]any{
		wittrafake.Device(namesDevice, "Freezer 2", "tag"),
		wittrafake.Device("D00124B001E2C0FFE", "", "beacon"),
	})
	c8y, err := c8yfake.Start(c8yfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c8y.Close() })

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "wittra-api.key"), []byte(namesKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := testutil.FreeAddrs(t, 1)[0]
	tg := startTestGateway(t, dir, map[string]string{
		"admin": "admin: {listen: " + admin + "}",
		"sinks": fmt.Sprintf(`sinks:
  - {name: local, type: broker}
  - {name: c8y, type: cumulocity, mode: mqtt, url: %q, tenant: %s, username: %s, password: %s}
wittra_api:
  url: %s
  organization_id: %s
  api_key_file: wittra-api.key
  refresh: 1h`, c8y.MQTTURL(), c8yfake.DefaultTenant, c8yfake.DefaultUser, c8yfake.DefaultPassword, api.URL(), namesOrg),
	})
	// No project is known before the first webhook: nothing asked yet.
	if n := len(api.Requests()); n != 0 {
		t.Fatalf("asked the API %d times before any project was seen", n)
	}
	body := readFixture(t, "f1_data_tag.json")
	if code, reply := tg.post(t, "/wittra", body); code != 200 {
		t.Fatalf("post: %d %s", code, reply)
	}
	// The project seen is asked about soon; the child, registered before the
	// name was known or after, ends up named "Freezer 2" with the next data.
	testutil.WaitFor(t, 30*time.Second, "device list fetched", func() bool { return tg.g.names.api.Stats().Devices == 2 })
	post2 := strings.Replace(body, `"payloadId": "a1B2c3D4e5F6g7H8i9J0"`, `"payloadId": "second-message-0001"`, 1)
	if code, reply := tg.post(t, "/wittra", post2); code != 200 {
		t.Fatalf("post: %d %s", code, reply)
	}
	childName := func() string {
		mo, _ := c8y.DeviceBySerial(namesDevice)
		return mo.Name
	}
	testutil.WaitFor(t, 30*time.Second, "child named Freezer 2", func() bool { return childName() == "Freezer 2" })

	// Renamed in Wittra: the next refresh and message carry it over.
	api.SetDevices(namesProject, []map[string]any{wittrafake.Device(namesDevice, "Freezer 2 (moved)", "tag")})
	tg.g.names.api.Refresh(context.Background())
	post3 := strings.Replace(body, `"payloadId": "a1B2c3D4e5F6g7H8i9J0"`, `"payloadId": "third-message-00001"`, 1)
	if code, reply := tg.post(t, "/wittra", post3); code != 200 {
		t.Fatalf("post: %d %s", code, reply)
	}
	testutil.WaitFor(t, 30*time.Second, "child renamed", func() bool { return childName() == "Freezer 2 (moved)" })

	// Metrics.
	_, metrics := httpGet(t, "http://"+admin+"/metrics")
	if v := metricValue(metrics, "wittra_gateway_wittra_api_devices"); v != 1 {
		t.Errorf("wittra_api_devices = %v, want 1", v)
	}
	if v := metricValue(metrics, "wittra_gateway_wittra_api_last_success_timestamp_seconds"); v < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("wittra_api_last_success = %v", v)
	}
	if v := metricValue(metrics, "wittra_gateway_wittra_api_refresh_errors_total"); v != 0 {
		t.Errorf("wittra_api_refresh_errors_total = %v", v)
	}

	// devices while the gateway runs: asked from its admin listener.
	cfgPath := filepath.Join(dir, "config.yaml")
	live := runDevices(t, cfgPath)
	checkDeviceRow(t, live, "Freezer 2 (moved)")

	// After the stop: from the queue file, API down.
	if err := tg.stop(); err != nil {
		t.Fatal(err)
	}
	api.Close()
	rows := runDevices(t, cfgPath)
	checkDeviceRow(t, rows, "Freezer 2 (moved)")
	var table bytes.Buffer
	if err := (&DevicesCommand{Stdout: &table, Stderr: io.Discard}).Run(context.Background(), []string{"-config", cfgPath}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"devices seen: 1 (from the queue file", namesDevice, "Freezer 2 (moved)", "tag", namesProject, "temperature=21.75"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

func runDevices(t *testing.T, cfgPath string) []deviceRow {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := (&DevicesCommand{Stdout: &out, Stderr: &errOut}).Run(context.Background(), []string{"-config", cfgPath, "-json"}); err != nil {
		t.Fatalf("devices -json: %v (%s)", err, errOut.String())
	}
	var rows []deviceRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("devices -json output: %v\n%s", err, out.String())
	}
	return rows
}

func checkDeviceRow(t *testing.T, rows []deviceRow, name string) {
	t.Helper()
	if len(rows) != 1 {
		t.Fatalf("devices = %+v, want one", rows)
	}
	r := rows[0]
	if r.ID != namesDevice || r.Project != namesProject || r.Name != name || r.Type != "tag" || r.Kind != "data" ||
		r.Values["temperature"] != "21.75" || r.Values["battery/percentage"] != "75" || r.LastSeen.IsZero() ||
		r.MeasuredAt == nil || !r.MeasuredAt.Equal(time.Date(2024, 3, 12, 8, 15, 42, 517000000, time.UTC)) {
		t.Fatalf("device row = %+v", r)
	}
}

// The wittra_api section: defaults, the key file, and every rule.
func TestWittraAPIConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k"), []byte("secret-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig([]byte("wittra_api: {organization_id: org1, api_key_file: k}\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.WittraAPI
	if w == nil || w.URL != "https://api.wittra.se" || w.APIKey != "secret-key" || w.Refresh != time.Hour || len(w.Projects) != 0 {
		t.Fatalf("wittra_api = %+v", w)
	}
	if r := cfg.Redacted().WittraAPI; r.APIKey != "REDACTED" || cfg.WittraAPI.APIKey != "secret-key" {
		t.Fatalf("redacted key %q", r.APIKey)
	}
	if cfg, err := ParseConfig([]byte("log: {level: info}\n"), dir); err != nil || cfg.WittraAPI != nil {
		t.Fatalf("absent section: %+v, %v", cfg.WittraAPI, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"wittra_api: {api_key: x}", "wittra_api.organization_id: required"},
		{"wittra_api: {organization_id: a/b, api_key: x}", "wittra_api.organization_id: must not contain"},
		{"wittra_api: {organization_id: o}", "wittra_api.api_key: required"},
		{"wittra_api: {organization_id: o, api_key: x, api_key_file: k}", "set either api_key or api_key_file"},
		{"wittra_api: {organization_id: o, api_key_file: missing}", "wittra_api.api_key_file: read secret file"},
		{"wittra_api: {organization_id: o, api_key: x, url: ftp://x}", "wittra_api.url: must start with https://"},
		{"wittra_api: {organization_id: o, api_key: x, refresh: 5s}", "wittra_api.refresh: must be at least 1m"},
		{"wittra_api: {organization_id: o, api_key: x, refresh: 60}", "has no unit"},
		{"wittra_api: {organization_id: o, api_key: x, projects: [\"a/b\"]}", "wittra_api.projects[0]: must be a Wittra project id"},
		{"wittra_api: {organization_id: o, api_key: x, colour: red}", "unknown key"},
	} {
		_, err := ParseConfig([]byte(tc.yaml+"\n"), dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.yaml, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret-key") {
			t.Errorf("%s: the key leaked into %v", tc.yaml, err)
		}
	}
	// The offline commands read no secret: a missing key file is no error.
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte("buffer: {path: q.db}\nwittra_api: {organization_id: o, api_key_file: /nonexistent}\n"), 0o600)
	if _, err := LoadQueueConfig(path); err != nil {
		t.Fatalf("LoadQueueConfig: %v", err)
	}
}

// The commented wittra_api section of config.example.yaml is a valid config.
func TestWittraAPIExampleConfig(t *testing.T) {
	b := testutil.ReadFile(t, "../../config.example.yaml")
	var lines []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "# wittra_api:") {
			in = true
		}
		if in {
			if !strings.HasPrefix(l, "#") {
				break
			}
			lines = append(lines, strings.TrimPrefix(l, "# "))
		}
	}
	if len(lines) < 3 {
		t.Fatal("no wittra_api example in config.example.yaml")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "wittra-api.key")
	os.WriteFile(key, []byte("k\n"), 0o600)
	text := strings.Replace(strings.Join(lines, "\n"), "/etc/wittra-gateway/wittra-api.key", key, 1)
	cfg, err := ParseConfig([]byte(text+"\n"), dir)
	if err != nil {
		t.Fatalf("example:\n%s\n%v", text, err)
	}
	if cfg.WittraAPI == nil || cfg.WittraAPI.OrganizationID != "zu5vNiAv9tJXZmmJSFMv" || cfg.WittraAPI.APIKey != "k" {
		t.Fatalf("example gave %+v", cfg.WittraAPI)
	}
}
