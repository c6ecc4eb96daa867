package bridge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"wittra-gateway/buffer"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const fixtureDir = "../wittra/testdata"

func fixture(t *testing.T, name string) string {
	return string(testutil.ReadFile(t, fixtureDir, name))
}

type intake struct {
	q    *buffer.Queue
	recv *Receiver
	url  string
}

func newIntake(t *testing.T, bcfg buffer.Config, routes ...Route) *intake {
	t.Helper()
	bcfg.Path = filepath.Join(t.TempDir(), "q.db")
	bcfg.Consumers = []string{"s"}
	if bcfg.DedupWindow == 0 {
		bcfg.DedupWindow = time.Hour
	}
	q, err := buffer.Open(bcfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) == 0 {
		routes = []Route{{Path: "/wittra"}}
	}
	recv := NewReceiver(ReceiverConfig{Routes: routes, MaxBody: 64 << 10}, q, zerolog.Nop())
	srv := httptest.NewServer(recv)
	t.Cleanup(func() {
		srv.Close()
		q.Close()
	})
	return &intake{q: q, recv: recv, url: srv.URL}
}

type response struct {
	code       int
	body       string
	retryAfter string
}

func (in *intake) post(t *testing.T, method, path, contentType, body string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, in.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("reply content type = %q, want application/json", ct)
	}
	if !json.Valid(b) {
		t.Errorf("reply body is not JSON: %q", b)
	}
	return response{code: resp.StatusCode, body: string(b), retryAfter: resp.Header.Get("Retry-After")}
}

// queued reads everything the queue holds for consumer s.
func (in *intake) queued(t *testing.T) []sinks.Message {
	t.Helper()
	var out []sinks.Message
	err := in.q.Scan(0, func(rec buffer.Record) bool {
		rec.Data = append([]byte(nil), rec.Data...)
		m, err := DecodeRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReceiverRefusals(t *testing.T) {
	const data = `{"deviceId":"D1","payloadId":"p1"}`
	routes := []Route{{Path: "/wittra", Token: "s3cret"}, {Path: "/open"}}
	auth := map[string]string{"auth-token": base64.StdEncoding.EncodeToString([]byte("s3cret"))}
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		hdr         map[string]string
		code        int
		errContains string
	}{
		{"unknown path", "POST", "/nope", "application/json", data, auth, 404, "no webhook route"},
		{"unknown path beats method", "GET", "/nope", "", "", nil, 404, "no webhook route"},
		{"GET", "GET", "/wittra", "", "", auth, 405, "use POST"},
		{"method beats token", "PUT", "/wittra", "application/json", data, nil, 405, "use POST"},
		{"missing token", "POST", "/wittra", "application/json", data, nil, 401, "auth-token"},
		{"wrong token", "POST", "/wittra", "application/json", data, map[string]string{"auth-token": "c2VjcmV0"}, 401, "auth-token"},
		{"token beats content type", "POST", "/wittra", "text/plain", data, nil, 401, "auth-token"},
		{"text/plain", "POST", "/wittra", "text/plain", data, auth, 415, "application/json"},
		{"no content type", "POST", "/open", "", data, nil, 415, "application/json"},
		{"content type beats size", "POST", "/open", "text/plain", strings.Repeat(" ", 70<<10), nil, 415, "application/json"},
		{"too large", "POST", "/open", "application/json", `{"a":"` + strings.Repeat("x", 70<<10) + `"}`, nil, 413, "body over"},
		{"size beats JSON", "POST", "/open", "application/json", strings.Repeat("x", 70<<10), nil, 413, "body over"},
		{"not JSON", "POST", "/open", "application/json", `{"deviceId": "D1",}`, nil, 400, "byte offset 18"},
		{"empty body", "POST", "/open", "application/json", ``, nil, 400, "not JSON"},
		{"JSON number", "POST", "/open", "application/json", `42`, nil, 400, "not a JSON object or array"},
		{"array with a string", "POST", "/open", "application/json", `[{"deviceId":"D1"}, "x"]`, nil, 400, "element 1 at byte offset 20 is not an object"},
		{"deviceId not a string", "POST", "/open", "application/json", `{"deviceId":5}`, nil, 400, "deviceId"},
		{"device id too long even escaped", "POST", "/open", "application/json", `[{"deviceId":"D1"},{"deviceId":"` + strings.Repeat("/", 100) + `"}]`, nil, 400, "element 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := newIntake(t, buffer.Config{}, routes...)
			got := in.post(t, tt.method, tt.path, tt.contentType, tt.body, tt.hdr)
			if got.code != tt.code {
				t.Fatalf("code = %d (%s), want %d", got.code, got.body, tt.code)
			}
			var e struct{ Error string }
			json.Unmarshal([]byte(got.body), &e)
			if !strings.Contains(e.Error, tt.errContains) {
				t.Fatalf("error = %q, want it to contain %q", e.Error, tt.errContains)
			}
			if q := in.queued(t); len(q) != 0 {
				t.Fatalf("a refused request queued %d messages", len(q))
			}
			var counted uint64
			for _, st := range in.recv.Stats() {
				for i, c := range ReplyCodes {
					if c == tt.code {
						counted += st.Replies[i].Load()
					}
				}
			}
			if counted != 1 {
				t.Fatalf("replies counted with code %d = %d, want 1", tt.code, counted)
			}
		})
	}
}

func TestReceiverQueueFull(t *testing.T) {
	in := newIntake(t, buffer.Config{MaxBytes: 300})
	got := in.post(t, "POST", "/wittra", "application/json", `[{"deviceId":"D1","x":"`+strings.Repeat("a", 100)+`"},{"deviceId":"D2","x":"`+strings.Repeat("a", 200)+`"}]`, nil)
	if got.code != 503 || got.retryAfter == "" {
		t.Fatalf("full queue: code %d retry-after %q, want 503 with Retry-After", got.code, got.retryAfter)
	}
	if !strings.Contains(got.body, "queue full") {
		t.Fatalf("body = %s, want it to say queue full", got.body)
	}
	if q := in.queued(t); len(q) != 0 {
		t.Fatalf("a rejected request left %d messages (want none: all or nothing)", len(q))
	}
	// The operator's alert: the refused messages are counted, not hidden.
	if got := in.recv.Stats()[0].Refused.Load(); got != 2 {
		t.Fatalf("refused counter = %d, want the request's 2 messages", got)
	}
}

func TestReceiverClosedQueue(t *testing.T) {
	in := newIntake(t, buffer.Config{})
	in.q.Close()
	got := in.post(t, "POST", "/wittra", "application/json", `{"deviceId":"D1"}`, nil)
	if got.code != 503 || got.retryAfter == "" {
		t.Fatalf("closed queue: code %d retry-after %q, want 503 with Retry-After", got.code, got.retryAfter)
	}
}

func TestReceiverAccepts(t *testing.T) {
	f1, f3, f4, f6 := fixture(t, "f1_data_tag.json"), fixture(t, "f3_event_device_updated.json"), fixture(t, "f4_data20.json"), fixture(t, "f6_legacy_binary.json")
	in := newIntake(t, buffer.Config{},
		Route{Path: "/wittra", Token: "s3cret"},
		Route{Path: "/site", Project: "hall-b", DevicePrefixes: []string{"D"}})
	b64 := map[string]string{"auth-token": base64.StdEncoding.EncodeToString([]byte("s3cret"))}
	raw := map[string]string{"auth-token": "s3cret"}

	steps := []struct {
		name, path, ct, body string
		hdr                  map[string]string
		reply                string
	}{
		{"DATA with base64 token", "/wittra", "application/json", f1, b64, `{"accepted":1,"duplicates":0}`},
		{"same payloadId again", "/wittra", "application/json; charset=utf-8", f1, raw, `{"accepted":0,"duplicates":1}`},
		{"EVENT", "/wittra", "application/json", f3, raw, `{"accepted":1,"duplicates":0}`},
		{"array on a route with a project and a filter", "/site", "application/json", "[" + f4 + ",\n" + f6 + `, {"deviceId":"M00FF"}, {"note":"no id"}]`, nil, `{"accepted":3,"duplicates":0,"filtered":1}`},
		{"empty array", "/site", "application/json", `[]`, nil, `{"accepted":0,"duplicates":0}`},
	}
	for _, s := range steps {
		got := in.post(t, "POST", s.path, s.ct, s.body, s.hdr)
		if got.code != 200 || strings.TrimSpace(got.body) != s.reply {
			t.Fatalf("%s: %d %s, want 200 %s", s.name, got.code, got.body, s.reply)
		}
	}
	q := in.queued(t)
	want := []struct {
		project, device string
		kind            sinks.Kind
		body            string
	}{
		{"P4nB8vQ2wE6rT1yU3iOa", "D00124B001E2A1B2C", sinks.KindData, f1},
		{"P4nB8vQ2wE6rT1yU3iOa", "D00124B001E2A1B2C", sinks.KindEvent, f3},
		{"hall-b", "D00124B001E2D3E4F", sinks.KindData, strings.TrimSpace(f4)},
		{"hall-b", "D00124B001E2A1B2C", sinks.KindData, strings.TrimSpace(f6)},
		{"hall-b", sinks.UnknownDevice, sinks.KindData, `{"note":"no id"}`},
	}
	if len(q) != len(want) {
		t.Fatalf("queued %d messages, want %d", len(q), len(want))
	}
	for i, w := range want {
		m := q[i]
		if m.Project != w.project || m.Device != w.device || m.Kind != w.kind {
			t.Errorf("message %d = %s/%s/%s, want %s/%s/%s", i, m.Project, m.Device, m.Kind, w.project, w.device, w.kind)
		}
		if string(m.Body) != w.body {
			t.Errorf("message %d body changed:\n got %q\nwant %q", i, m.Body, w.body)
		}
	}
	if got := in.q.Counters(); got.Commits == 0 {
		t.Fatalf("no commits counted")
	}
}

// A reading is never lost for the shape of its id: ids unsafe as a topic
// level are escaped (reversibly) and the whole batch is kept.
func TestReceiverEscapesUnsafeIDs(t *testing.T) {
	in := newIntake(t, buffer.Config{})
	body := `[{"deviceId":"D1"},{"deviceId":"D1/x"},{"deviceId":"D+","projectId":"p#"},{"deviceId":"D\u0000"}]`
	got := in.post(t, "POST", "/wittra", "application/json", body, nil)
	if got.code != 200 || strings.TrimSpace(got.body) != `{"accepted":4,"duplicates":0}` {
		t.Fatalf("batch with unsafe ids: %d %s, want all 4 accepted", got.code, got.body)
	}
	want := [][2]string{{DefaultProject, "D1"}, {DefaultProject, "D1%2Fx"}, {"p%23", "D%2B"}, {DefaultProject, "D%00"}}
	q := in.queued(t)
	if len(q) != len(want) {
		t.Fatalf("queued %d messages, want %d", len(q), len(want))
	}
	for i, m := range q {
		if m.Project != want[i][0] || m.Device != want[i][1] {
			t.Errorf("message %d: project %q device %q, want %q %q", i, m.Project, m.Device, want[i][0], want[i][1])
		}
	}
}

func TestReceiverDefaultProject(t *testing.T) {
	in := newIntake(t, buffer.Config{})
	if got := in.post(t, "POST", "/wittra", "application/json", `{"deviceId":"D1"}`, nil); got.code != 200 {
		t.Fatalf("code %d %s", got.code, got.body)
	}
	if q := in.queued(t); len(q) != 1 || q[0].Project != DefaultProject {
		t.Fatalf("queued %+v, want one message in project %q", q, DefaultProject)
	}
}

// fakeSink records what it is given and fails on demand.
type fakeSink struct {
	got      chan sinks.Message
	failures int             // fail this many Publish calls first
	reject   map[uint64]bool // refuse these sequences permanently
	calls    int
}

func (f *fakeSink) Name() string { return "fake" }
func (f *fakeSink) Close(context.Context) error {
	return nil
}
func (f *fakeSink) Publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	f.calls++
	if f.failures > 0 {
		f.failures--
		return 0, io.ErrUnexpectedEOF
	}
	for i, m := range msgs {
		if f.reject[m.Seq] {
			return i, sinks.ErrPermanent
		}
		f.got <- m
	}
	return len(msgs), nil
}

func TestForwarderDeliversInOrderRetriesAndSkipsRejected(t *testing.T) {
	in := newIntake(t, buffer.Config{})
	for i := range 20 {
		body := `{"deviceId":"D1","payloadId":"p` + string(rune('a'+i)) + `"}`
		if got := in.post(t, "POST", "/wittra", "application/json", body, nil); got.code != 200 {
			t.Fatalf("post %d: %d", i, got.code)
		}
	}
	sink := &fakeSink{got: make(chan sinks.Message, 100), failures: 2, reject: map[uint64]bool{5: true}}
	r, err := in.q.Reader("s")
	if err != nil {
		t.Fatal(err)
	}
	f := NewForwarder(ForwarderConfig{Batch: 7, MinBackoff: time.Millisecond}, r, sink, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	var seqs []uint64
	for len(seqs) < 19 {
		select {
		case m := <-sink.got:
			seqs = append(seqs, m.Seq)
		case <-time.After(5 * time.Second):
			t.Fatalf("delivered %v, want 19 messages", seqs)
		}
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] || seqs[i] == 5 {
			t.Fatalf("delivery order %v: not increasing or includes the rejected 5", seqs)
		}
	}
	if !testutil.Poll(5*time.Second, func() bool { st, _ := in.q.Stats(); return st.Messages == 0 }) {
		st, _ := in.q.Stats()
		t.Fatalf("queue still holds %d messages after delivery", st.Messages)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if got := f.Stats().Failures.Load(); got != 2 {
		t.Errorf("failures = %d, want 2", got)
	}
	if got := f.Stats().Rejected.Load(); got != 1 {
		t.Errorf("rejected = %d, want 1", got)
	}
	var dead []buffer.DeadLetter
	in.q.DeadLetters(func(d buffer.DeadLetter) bool {
		dead = append(dead, d)
		return true
	})
	if len(dead) != 1 || dead[0].Seq != 5 || dead[0].Consumer != "s" || !strings.Contains(dead[0].Reason, "rejected permanently") {
		t.Fatalf("dead letters = %+v, want seq 5 of consumer s with the reason", dead)
	}
	if m, err := DecodeRecord(dead[0].Record); err != nil || m.Device != "D1" {
		t.Fatalf("dead letter record does not decode: %v %+v", err, m)
	}
	if got := in.q.Counters().DeadLetters; got != 1 {
		t.Errorf("dead letter counter = %d, want 1", got)
	}
}

// stalledSink never delivers: it waits for its (absent) connection until
// the attempt's deadline, as a real sink does during an outage.
type stalledSink struct{ calls atomic.Int64 }

func (s *stalledSink) Name() string                { return "stalled" }
func (s *stalledSink) Close(context.Context) error { return nil }
func (s *stalledSink) Publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	s.calls.Add(1)
	<-ctx.Done()
	return 0, ctx.Err()
}

// An outage where every attempt ends by its deadline must show in
// sink_failures_total: it is what operators alert on.
func TestForwarderCountsAttemptsThatRunOut(t *testing.T) {
	in := newIntake(t, buffer.Config{})
	if got := in.post(t, "POST", "/wittra", "application/json", `{"deviceId":"D1"}`, nil); got.code != 200 {
		t.Fatalf("post: %d", got.code)
	}
	r, err := in.q.Reader("s")
	if err != nil {
		t.Fatal(err)
	}
	sink := &stalledSink{}
	f := NewForwarder(ForwarderConfig{Attempt: 20 * time.Millisecond}, r, sink, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	testutil.Poll(10*time.Second, func() bool { return sink.calls.Load() >= 3 }) // checked after the stop
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	calls := sink.calls.Load()
	if calls < 3 {
		t.Fatalf("sink called %d times in 10 s, want at least 3", calls)
	}
	// Every attempt but possibly the one cut by cancel ran out.
	if got := f.Stats().Failures.Load(); got < uint64(calls-1) {
		t.Fatalf("failures = %d after %d fruitless attempts", got, calls)
	}
	if st, _ := in.q.Stats(); st.Messages != 1 {
		t.Fatalf("queue holds %d, want the undelivered message kept", st.Messages)
	}
}
