package status

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"wittra-gateway/internal/clock"

	"golang.org/x/crypto/bcrypt"
)

// rig is a Status reading a Reading the test sets.
type rig struct {
	clk *clock.Fake
	mu  sync.Mutex
	r   Reading
	st  *Status
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	g := &rig{clk: clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}
	g.r.Sinks = []SinkReading{{Name: "a", Type: "mqtt", Link: &LinkReading{Connected: true}}}
	cfg.Now = g.clk.Now
	cfg.Read = func() Reading { g.mu.Lock(); defer g.mu.Unlock(); return g.r }
	cfg.GatewayID = "gw1"
	st, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.st = st
	return g
}

func (g *rig) set(f func(r *Reading)) {
	g.mu.Lock()
	f(&g.r)
	g.mu.Unlock()
}

func TestRatesOverTheLastMinuteAndABoundedHistory(t *testing.T) {
	g := newRig(t, Config{SampleEvery: 10 * time.Second, History: time.Minute})
	if len(g.st.ring) != 6 {
		t.Fatalf("ring of %d samples, want 6 (1 min / 10 s)", len(g.st.ring))
	}
	// 20 intervals of 10 s: 50 accepted and 30 delivered per interval,
	// depth growing by 20.
	for i := 1; i <= 20; i++ {
		g.clk.Advance(10 * time.Second)
		g.set(func(r *Reading) {
			r.Intake.Accepted += 50
			r.Sinks[0].Delivered += 30
			r.Sinks[0].Depth += 20
		})
		g.st.Sample()
	}
	rep := g.st.Report(Query{})
	if rep.Intake.RatePerSecond != 5 || rep.Sinks[0].DeliveryRatePerSecond != 3 {
		t.Fatalf("rates %v and %v, want 5 and 3", rep.Intake.RatePerSecond, rep.Sinks[0].DeliveryRatePerSecond)
	}
	if len(rep.Sinks[0].DepthHistory) != 6 || len(rep.Intake.RateHistory) != 5 {
		t.Fatalf("history lengths %d and %d, want 6 and 5", len(rep.Sinks[0].DepthHistory), len(rep.Intake.RateHistory))
	}
	if h := rep.Sinks[0].DepthHistory; h[0] != 300 || h[5] != 400 {
		t.Fatalf("depth history %v, want 300..400 (the last minute)", h)
	}
	for _, v := range rep.Intake.RateHistory {
		if v != 5 {
			t.Fatalf("rate history %v, want all 5", rep.Intake.RateHistory)
		}
	}
	if !rep.History.End.Equal(g.clk.Now()) || rep.History.IntervalSeconds != 10 || rep.History.SpanSeconds != 60 {
		t.Fatalf("history: %+v", rep.History)
	}

	// Intake stops: the rate falls to 0 within the minute.
	g.clk.Advance(30 * time.Second)
	if r := g.st.Report(Query{}).Intake.RatePerSecond; r <= 0 || r >= 5 {
		t.Fatalf("30 s after the last message: %v", r)
	}
	for range 7 {
		g.clk.Advance(10 * time.Second)
		g.st.Sample()
	}
	if r := g.st.Report(Query{}).Intake.RatePerSecond; r != 0 {
		t.Fatalf("a minute after the last message: %v", r)
	}
}

func TestRateRightAfterStart(t *testing.T) {
	g := newRig(t, Config{})
	g.clk.Advance(4 * time.Second)
	g.set(func(r *Reading) { r.Intake.Accepted = 8 })
	rep := g.st.Report(Query{})
	if rep.Intake.RatePerSecond != 2 || rep.Gateway.UptimeSeconds != 4 {
		t.Fatalf("rate %v uptime %v, want 2 and 4", rep.Intake.RatePerSecond, rep.Gateway.UptimeSeconds)
	}
	// A burst a moment after start is not divided by a tiny span.
	g2 := newRig(t, Config{})
	g2.clk.Advance(time.Millisecond)
	g2.set(func(r *Reading) { r.Intake.Accepted = 3 })
	if r := g2.st.Report(Query{}).Intake.RatePerSecond; r != 3 {
		t.Fatalf("burst right after start: %v/s, want 3", r)
	}
}

func TestSinkStates(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name string
		sr   SinkReading
		want string
	}{
		{"connectionless idle", SinkReading{}, StateOK},
		{"connected idle", SinkReading{Link: &LinkReading{Connected: true}}, StateOK},
		{"disconnected, nothing waiting", SinkReading{Link: &LinkReading{}}, StateDown},
		{"failing with backlog", SinkReading{Depth: 3, LastFailure: now, LastSuccess: now.Add(-time.Minute), Oldest: now}, StateDown},
		{"old failure, delivering", SinkReading{Depth: 3, LastFailure: now.Add(-time.Hour), LastSuccess: now, Oldest: now}, StateOK},
		{"old failure, idle", SinkReading{LastFailure: now}, StateOK},
		{"slow", SinkReading{Depth: 3, LastSuccess: now, Oldest: now.Add(-2 * time.Minute)}, StateLagging},
	}
	for _, c := range cases {
		if got := sinkState(c.sr, now); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestDevicesSearchLimitAndValues(t *testing.T) {
	body, err := os.ReadFile("../../testdata/f1_data_tag.json")
	if err != nil {
		t.Fatal(err)
	}
	g := newRig(t, Config{})
	now := g.clk.Now()
	g.set(func(r *Reading) {
		r.Devices = []DeviceReading{
			{ID: "D1", Project: "alpha", Kind: "data", LastSeen: now, Body: body, BodyLen: len(body)},
			{ID: "D2", Project: "beta", LastSeen: now, BodyLen: 9000},
			{ID: "X3", Project: "alpha", LastSeen: now, Body: []byte(`{"payload":{"t":1}}`)},
		}
	})
	rep := g.st.Report(Query{})
	if rep.Devices.Tracked != 3 || rep.Devices.Matched != 3 || len(rep.Devices.Items) != 3 {
		t.Fatalf("devices: %+v", rep.Devices)
	}
	d := rep.Devices.Items[0]
	vals := map[string]string{}
	for _, v := range d.Values {
		vals[v.Path] = v.Value
	}
	if vals["temperature"] != "21.75" || vals["battery/chargingStatus"] != "NOT_PLUGGED" || d.MeasuredAt == nil ||
		d.MeasuredAt.Format(time.RFC3339) != "2024-03-12T08:15:42Z" || d.Note != "" {
		t.Fatalf("D1: %+v", d)
	}
	if n := rep.Devices.Items[1]; len(n.Values) != 0 || !strings.Contains(n.Note, "9000 bytes") {
		t.Fatalf("D2 (too large): %+v", n)
	}
	s := g.st.Report(Query{Search: "ALPHA", Devices: 1})
	if s.Devices.Matched != 2 || len(s.Devices.Items) != 1 || s.Devices.Items[0].ID != "D1" {
		t.Fatalf("search alpha, limit 1: %+v", s.Devices)
	}
	if s := g.st.Report(Query{Search: "x3"}); s.Devices.Matched != 1 || s.Devices.Items[0].ID != "X3" {
		t.Fatalf("search x3: %+v", s.Devices)
	}
	// Values are cut, with a note, beyond maxValues.
	var many strings.Builder
	many.WriteString(`{"payload":{`)
	for i := range maxValues + 5 {
		if i > 0 {
			many.WriteByte(',')
		}
		many.WriteString(`"k` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":1`)
	}
	many.WriteString(`}}`)
	dv := device(DeviceReading{ID: "M", Body: []byte(many.String())})
	if len(dv.Values) != maxValues || dv.Note != "5 more values not shown" {
		t.Fatalf("many values: %d, %q", len(dv.Values), dv.Note)
	}
}

func TestPageAndAPI(t *testing.T) {
	g := newRig(t, Config{Refresh: 2 * time.Second, Listeners: []Listener{{Name: "webhook", Scheme: "https", Address: "0.0.0.0:8443"}}})
	g.set(func(r *Reading) {
		r.Intake.Accepted = 7
		r.Intake.Replies = map[int]uint64{200: 7, 401: 2}
		r.Queue = QueueReading{Messages: 4, Bytes: 512, MaxBytes: 2048}
		r.Sinks[0].Link = &LinkReading{Connected: false, Since: g.clk.Now().Add(-90 * time.Second), LastError: "connection refused"}
		r.Sinks[0].Depth = 4
		r.Devices = []DeviceReading{{ID: "D<1>", Project: "p", LastSeen: g.clk.Now()}}
	})
	mux := http.NewServeMux()
	g.st.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, page := get("/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != csp {
		t.Fatalf("page: %d %v", resp.StatusCode, resp.Header)
	}
	for _, want := range []string{
		`data-refresh="2"`, "https://0.0.0.0:8443", ">gw1<", "401×2",
		"disconnected for 1 min: connection refused", `class="sink state-down"`,
		`<progress data-k="queue" data-f="fill" max="1" value="0.25">`,
		"D&lt;1&gt;", // escaped
		`<script src="static/status.js" defer></script>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "style=") || strings.Contains(page, "<script>") || regexp.MustCompile(`\son[a-z]+=`).MatchString(page) {
		t.Error("page has inline style or script, which the CSP blocks")
	}
	resp, js := get("/static/status.js")
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") || !strings.Contains(js, "api/status") {
		t.Fatalf("status.js: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	resp, body := get("/api/status?q=d%3C")
	var rep map[string]any
	if err := json.Unmarshal([]byte(body), &rep); err != nil || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("api: %v %s", err, body)
	}
	for _, key := range []string{"schema", "time", "gateway", "listeners", "intake", "queue", "sinks", "devices", "history"} {
		if _, ok := rep[key]; !ok {
			t.Errorf("api lacks %q", key)
		}
	}
	if got := rep["intake"].(map[string]any)["refusals"].(map[string]any); len(got) != 1 || got["401"] != float64(2) {
		t.Errorf("refusals: %v", got)
	}
	if d := rep["devices"].(map[string]any); d["matched"] != float64(1) {
		t.Errorf("search d<: %v", d)
	}
	if _, ok := rep["devices"].(map[string]any)["items"].([]any)[0].(map[string]any)["name"]; ok {
		t.Error("an unknown device name is omitted, not empty")
	}
}

func TestFormattersAgreeOnEdges(t *testing.T) {
	now := time.Now()
	cases := map[string]string{
		fmtRate(0):                   "0/s",
		fmtRate(0.125):               "0.13/s",
		fmtRate(1234.4):              "1234/s",
		fmtBytes(1023):               "1023 B",
		fmtBytes(1536):               "1.5 KiB",
		fmtBytes(1 << 30):            "1 GiB",
		fmtDur(59.9):                 "59 s",
		fmtDur(3599):                 "59 min",
		fmtDur(3660):                 "1 h 1 min",
		fmtDur(90000):                "1 d 1 h",
		fmtAgo(nil, now):             "never",
		fmtLink(nil, now):            "in-process, no connection",
		fmtRefusals(nil):             "none",
		sparkPoints([]uint64{0, 0}):  "0.0,39.0 360.0,39.0",
		sparkPoints([]float64{1, 2}): "0.0,20.0 360.0,1.0",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("no Read accepted")
	}
	if _, err := New(Config{Read: func() Reading { return Reading{} }, SampleEvery: time.Minute, History: time.Second}); err == nil {
		t.Error("history shorter than a sample accepted")
	}
}

func TestBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewAuth([]User{{Username: "tech", PasswordHash: "s3cret"}}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("plain password accepted or echoed: %v", err)
	}
	if _, err := NewAuth(nil); err == nil {
		t.Fatal("no users accepted")
	}
	a, err := NewAuth([]User{{Username: "tech", PasswordHash: string(hash)}}, "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "in") })))
	defer srv.Close()
	try := func(path, user, pass string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("401 without a Basic challenge")
		}
		return resp.StatusCode
	}
	for _, c := range []struct {
		path, user, pass string
		want             int
	}{
		{"/", "", "", 401},
		{"/", "tech", "wrong", 401},
		{"/", "nobody", "s3cret", 401},
		{"/", "tech", "s3cret", 200},
		{"/", "tech", "s3cret", 200}, // from the cache
		{"/api/status", "tech", "s3cret", 200},
		{"/healthz", "", "", 200},
	} {
		if got := try(c.path, c.user, c.pass); got != c.want {
			t.Errorf("GET %s as %q/%q: %d, want %d", c.path, c.user, c.pass, got, c.want)
		}
	}
	if len(a.cache) != 1 {
		t.Errorf("cache holds %d entries, want 1 (failures are not cached)", len(a.cache))
	}
	// Cached credentials expire.
	a.now = func() time.Time { return time.Now().Add(authCacheTTL + time.Second) }
	if got := try("/", "tech", "s3cret"); got != 200 {
		t.Errorf("after the cache expired: %d", got)
	}
	// The cache stays bounded: a full cache of other, live entries makes
	// room for a new one.
	a.mu.Lock()
	clear(a.cache)
	for i := range authCacheSize {
		a.cache[[32]byte{byte(i), 1}] = time.Now().Add(time.Hour)
	}
	a.mu.Unlock()
	a.now = time.Now
	if got := try("/", "tech", "s3cret"); got != 200 || len(a.cache) != authCacheSize {
		t.Errorf("full cache: %d, %d entries (bound %d)", got, len(a.cache), authCacheSize)
	}
}

// BenchmarkReport is one /api/status with 1,000 tracked devices: the
// default 100 listed, and all of them.
func BenchmarkReport(b *testing.B) {
	body, err := os.ReadFile("../../testdata/f1_data_tag.json")
	if err != nil {
		b.Fatal(err)
	}
	devs := make([]DeviceReading, 1000)
	for i := range devs {
		devs[i] = DeviceReading{ID: "D" + strconv.Itoa(i), Project: "p", LastSeen: time.Now(), Body: body}
	}
	st, err := New(Config{Read: func() Reading {
		return Reading{Devices: devs, Sinks: []SinkReading{{Name: "a"}, {Name: "b"}}}
	}})
	if err != nil {
		b.Fatal(err)
	}
	for range 360 {
		st.Sample()
	}
	for _, c := range []struct {
		name string
		q    Query
	}{{"devices=100", Query{}}, {"devices=all", Query{Devices: -1}}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				out, _ := json.Marshal(st.Report(c.q))
				n = len(out)
			}
			b.ReportMetric(float64(n), "json-bytes")
		})
	}
}
