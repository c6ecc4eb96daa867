package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/bridge"
	"wittra-gateway/buffer"
	"wittra-gateway/internal/testutil"
)

// testGateway is a gateway running in-process on loopback with port 0
// listeners and a queue in a temp dir.
type testGateway struct {
	*inProc
	webhook string // base URL
	broker  string // tcp://host:port
}

// startTestGateway runs the gateway on config text extra (YAML sections
// that replace the defaults below).
func startTestGateway(t *testing.T, dir string, sections map[string]string) *testGateway {
	t.Helper()
	return startTestGatewayTimed(t, dir, sections, testTiming)
}

// startTestGatewayTimed is startTestGateway with the gateway's timing tm.
func startTestGatewayTimed(t *testing.T, dir string, sections map[string]string, tm timing) *testGateway {
	t.Helper()
	base := map[string]string{
		"gateway": "gateway: {id: test-gw}",
		"log":     "log: {level: warn}",
		"webhook": "webhook: {listen: 127.0.0.1:0}",
		"buffer":  "buffer: {path: " + filepath.Join(dir, "queue.db") + "}",
		"admin":   "admin: {listen: \"\"}",
		"broker":  "broker: {listeners: [{type: tcp, address: 127.0.0.1:0}]}",
		"sinks":   "sinks: [{name: local, type: broker, topic_prefix: wittra, values: true, retain: false}]",
	}
	for k, v := range sections {
		base[k] = v
	}
	var text strings.Builder
	for _, k := range []string{"gateway", "log", "webhook", "buffer", "admin", "broker", "sinks"} {
		text.WriteString(base[k] + "\n")
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(text.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := &testGateway{inProc: runInProc(t, path, tm)}
	tg.webhook = "http://" + tg.g.webhookLn.Addr().String()
	tg.broker = "tcp://" + tg.g.brokerSrv.Addrs()[0]
	return tg
}

func (tg *testGateway) post(t *testing.T, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(tg.webhook+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// collect reads until it has every topic in want or the timeout passes;
// it returns the last payload per topic and the topics in arrival order.
func collect(t *testing.T, sub *testutil.Subscriber, want []string, timeout time.Duration) (map[string][]byte, []string) {
	t.Helper()
	got := map[string][]byte{}
	var order []string
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		for _, w := range want {
			if _, ok := got[w]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return got, order
		}
		r := sub.Next(t, time.Until(deadline))
		got[r.Topic] = []byte(r.Payload)
		order = append(order, r.Topic)
	}
}

func readFixture(t *testing.T, name string) string {
	return string(testutil.ReadFile(t, "../../testdata", name))
}

func TestEndToEndFixturesReachTheEmbeddedBroker(t *testing.T) {
	tg := startTestGateway(t, t.TempDir(), nil)
	sub := testutil.Subscribe(t, tg.broker, "wittra/#", 1, testutil.SubscriberOptions{})

	const proj, tag, lpth = "P4nB8vQ2wE6rT1yU3iOa", "D00124B001E2A1B2C", "D00124B001E2D3E4F"
	tests := []struct {
		name    string
		fixture string
		topics  map[string]string // topic → payload; "" = the body itself
	}{
		{"DATA tag", "f1_data_tag.json", map[string]string{
			"wittra/" + proj + "/" + tag + "/data":               "",
			"wittra/" + proj + "/" + tag + "/temperature":        "21.75",
			"wittra/" + proj + "/" + tag + "/battery/percentage": "75",
			"wittra/" + proj + "/" + tag + "/location":           `{"latitude":59.33258,"longitude":18.06491,"accuracy":0.8,"level":2,"height":1.1,"label":"Hall B"}`,
			"wittra/" + proj + "/" + tag + "/neighbors":          `[{"id":"D00124B001E2C0FFE","rssi":-67},{"id":"D00124B001E2BEEF1","rssi":-81}]`,
		}},
		{"DATA lpth", "f2_data_lpth_event.json", map[string]string{
			"wittra/" + proj + "/" + lpth + "/data":              "",
			"wittra/" + proj + "/" + lpth + "/humidity/humidity": "41.2",
			"wittra/" + proj + "/" + lpth + "/light":             "312",
		}},
		{"EVENT", "f3_event_device_updated.json", map[string]string{
			"wittra/" + proj + "/" + tag + "/event": "",
		}},
		{"Data 2.0", "f4_data20.json", map[string]string{
			"wittra/default/" + lpth + "/data":                               "",
			"wittra/default/" + lpth + "/wittra-lpth-humidity/humidity":      "40.5",
			"wittra/default/" + lpth + "/wittra-tag-temperature/temperature": "22.9",
		}},
		{"legacy binaryData", "f6_legacy_binary.json", map[string]string{
			"wittra/default/" + tag + "/data":         "",
			"wittra/default/" + tag + "/temperature":  "21.5",
			"wittra/default/" + tag + "/usage/moving": "12",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := readFixture(t, tt.fixture)
			code, reply := tg.post(t, "/wittra", body)
			if code != 200 || reply != `{"accepted":1,"duplicates":0}` {
				t.Fatalf("post: %d %s", code, reply)
			}
			var want []string
			for topic := range tt.topics {
				want = append(want, topic)
			}
			got, _ := collect(t, sub, want, 5*time.Second)
			for topic, payload := range tt.topics {
				if payload == "" {
					payload = body
				}
				if !bytes.Equal(got[topic], []byte(payload)) {
					t.Errorf("%s = %q, want %q", topic, got[topic], payload)
				}
			}
		})
	}
}

func TestEndToEndArrayKeepsPerDeviceOrder(t *testing.T) {
	tg := startTestGateway(t, t.TempDir(), map[string]string{
		"sinks": "sinks: [{name: local, type: broker, topic_prefix: site, values: false}]",
	})
	sub := testutil.Subscribe(t, tg.broker, "site/+/+/data", 1, testutil.SubscriberOptions{})
	const n = 200
	var batch []string
	for i := range n {
		batch = append(batch, fmt.Sprintf(`{"deviceId":"D%d","projectId":"p","payloadId":"id-%d","seq":%d}`, i%2, i, i))
		if len(batch) == 20 {
			if code, reply := tg.post(t, "/wittra", "["+strings.Join(batch, ",")+"]"); code != 200 || reply != `{"accepted":20,"duplicates":0}` {
				t.Fatalf("post: %d %s", code, reply)
			}
			batch = batch[:0]
		}
	}
	next := map[string]int{"site/p/D0/data": 0, "site/p/D1/data": 1}
	deadline := time.Now().Add(10 * time.Second)
	for range n {
		r := sub.Next(t, time.Until(deadline))
		var seq int
		fmt.Sscanf(r.Payload[strings.Index(r.Payload, `"seq":`)+6:], "%d", &seq)
		if seq != next[r.Topic] {
			t.Fatalf("%s: got seq %d, want %d (order broken)", r.Topic, seq, next[r.Topic])
		}
		next[r.Topic] += 2
	}
}

func TestEndToEndDedupSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	body := readFixture(t, "f1_data_tag.json")
	tg := startTestGateway(t, dir, nil)
	if code, reply := tg.post(t, "/wittra", body); code != 200 || reply != `{"accepted":1,"duplicates":0}` {
		t.Fatalf("first post: %d %s", code, reply)
	}
	if err := tg.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	tg = startTestGateway(t, dir, nil)
	sub := testutil.Subscribe(t, tg.broker, "wittra/+/+/data", 1, testutil.SubscriberOptions{})
	if code, reply := tg.post(t, "/wittra", body); code != 200 || reply != `{"accepted":0,"duplicates":1}` {
		t.Fatalf("post after restart: %d %s, want a duplicate", code, reply)
	}
	other := strings.Replace(body, "a1B2c3D4e5F6g7H8i9J0", "another-id", 1)
	if code, reply := tg.post(t, "/wittra", other); code != 200 || reply != `{"accepted":1,"duplicates":0}` {
		t.Fatalf("post of a new id: %d %s", code, reply)
	}
	// The new message arrives and the duplicate was not published again.
	if r := sub.Next(t, 5*time.Second); !strings.Contains(r.Payload, "another-id") {
		t.Fatalf("first publication after restart is %q, want the new message (duplicate published?)", r.Payload[:60])
	}
}

func TestQueueCommands(t *testing.T) {
	dir := t.TempDir()
	tg := startTestGateway(t, dir, nil)
	cfgPath := filepath.Join(dir, "config.yaml")
	queueCmd := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := (&QueueCommand{Stdout: &out, Stderr: io.Discard}).Run(context.Background(), append(args, "-config", cfgPath))
		return out.String(), err
	}
	start := time.Now()
	if _, err := queueCmd("stats"); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("queue stats while the gateway runs: err = %v, want a locked error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("queue stats took %v against a locked file, want a quick error", d)
	}
	if err := tg.stop(); err != nil {
		t.Fatal(err)
	}

	queueBacklog(t, cfgPath, "b", 3)

	out, err := queueCmd("stats")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "messages     3") || !regexp.MustCompile(`local\s+3\s`).MatchString(out) {
		t.Fatalf("stats:\n%s\nwant 3 messages, depth 3 for local", out)
	}
	out, err = queueCmd("peek", "-n", "2")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[0], `"device":"D0"`) || !strings.Contains(lines[0], `"body":{"deviceId":"D0","payloadId":"b0"}`) {
		t.Fatalf("peek -n 2:\n%s", out)
	}
	out, err = queueCmd("export")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "\n"); n != 3 {
		t.Fatalf("export printed %d lines, want 3:\n%s", n, out)
	}
	if _, err := queueCmd("purge"); err == nil || exitCode(err) != exitUsage {
		t.Fatalf("purge without -yes: err = %v, want a usage error", err)
	}
	if out, err = queueCmd("purge", "-yes"); err != nil || !strings.Contains(out, "purged 3") {
		t.Fatalf("purge -yes: %q %v", out, err)
	}
	if out, _ = queueCmd("stats"); !strings.Contains(out, "messages     0") {
		t.Fatalf("stats after purge:\n%s", out)
	}
}

// Under systemd the secrets live in the service's environment or
// credentials; an operator's `queue stats` from a shell has neither and must
// still work. Problems of the queue itself are still reported.
func TestQueueCommandsNeedNoSecrets(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	write := func(buffer string) {
		t.Helper()
		yaml := `webhook:
  listen: 127.0.0.1:0
  routes:
    - path: /wittra
      token: ${WITTRA_TEST_UNSET_TOKEN}
buffer:
` + buffer + `
sinks:
  - name: plant
    type: mqtt
    url: tcp://127.0.0.1:1
    username: gw
    password_file: ${CREDENTIALS_DIRECTORY}/mqtt-password
`
		if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("  path: " + filepath.Join(dir, "q.db"))
	if _, err := LoadConfig(cfgPath); err == nil {
		t.Fatal("the full config loaded without its secrets; the test needs it not to")
	}
	var out bytes.Buffer
	if err := (&QueueCommand{Stdout: &out, Stderr: io.Discard}).Run(context.Background(), []string{"stats", "-config", cfgPath}); err != nil {
		t.Fatalf("queue stats without the service's secrets: %v", err)
	}
	if !regexp.MustCompile(`plant\s+0\s`).MatchString(out.String()) {
		t.Fatalf("stats:\n%s\nwant the sink plant with depth 0", out.String())
	}
	write("  path: " + filepath.Join(dir, "q.db") + "\n  max_bytes: lots")
	err := (&QueueCommand{Stdout: io.Discard, Stderr: io.Discard}).Run(context.Background(), []string{"stats", "-config", cfgPath})
	if err == nil || !strings.Contains(err.Error(), "buffer.max_bytes") || strings.Contains(err.Error(), "WITTRA_TEST_UNSET_TOKEN") {
		t.Fatalf("a bad buffer section: err = %v, want only the buffer.max_bytes problem", err)
	}
}

// queueBacklog commits n messages (devices D0.., payloadIds prefix0..) to
// the queue of the config at cfgPath through the real intake, with no
// forwarder running: a backlog for the offline commands.
func queueBacklog(t *testing.T, cfgPath, prefix string, n int) {
	t.Helper()
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	q, err := buffer.Open(bufferConfig(cfg, []string{"local"}), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	srv := httptest.NewServer(bridge.NewReceiver(receiverConfig(cfg), q, zerolog.Nop()))
	defer srv.Close()
	for i := range n {
		resp, err := http.Post(srv.URL+"/wittra", "application/json", strings.NewReader(fmt.Sprintf(`{"deviceId":"D%d","payloadId":"%s%d"}`, i, prefix, i)))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("post %d: %v %v", i, err, resp)
		}
		resp.Body.Close()
	}
}
