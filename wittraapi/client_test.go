package wittraapi

import (
	"context"
	"encoding/base64"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/internal/clock"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
	"wittra-gateway/wittraapi/wittrafake"
)

const (
	testOrg = "zu5vNiAv9tJXZmmJSFMv"
	testKey = "k3y-0123456789abcdef0123456789abcdef0123456789ab"
	projA   = "P4nB8vQ2wE6rT1yU3iOa"
	projB   = "Q9xY8wV7uT6sR5qP4oNm"
)

func startFake(t *testing.T) *wittrafake.Server {
	t.Helper()
	f, err := wittrafake.Start(testOrg, testKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// openQueue opens a real queue file (the gateway keeps the lists in its KV).
func openQueue(t *testing.T, path string) *buffer.Queue {
	t.Helper()
	q, err := buffer.Open(buffer.Config{Path: path, MaxBytes: 1 << 20, MaxAge: time.Hour, Consumers: []string{"s"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func newClient(t *testing.T, f *wittrafake.Server, mut func(*Config)) *Client {
	t.Helper()
	cfg := Config{URL: f.URL(), OrganizationID: testOrg, APIKey: testKey, Projects: []string{projA},
		Clock: clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), Timeout: 20 * time.Second}
	if mut != nil {
		mut(&cfg)
	}
	c, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantDevice(t *testing.T, d sinks.Directory, project, device string, want sinks.DeviceInfo, wantOK bool) {
	t.Helper()
	got, ok := d.Device(project, device)
	if got != want || ok != wantOK {
		t.Fatalf("Device(%s, %s) = %+v, %v; want %+v, %v", project, device, got, ok, want, wantOK)
	}
}

// A good answer gives names and types; null, absent and odd fields are
// tolerated; the list is kept in the queue file and read back after a
// restart with the API gone.
func TestNamesFetchedKeptAndReloaded(t *testing.T) {
	f := startFake(t)
	odd := wittrafake.Device("D0000000000000003", "", "futureThing")
	delete(odd, "name")
	odd["extra"] = map[string]any{"nested": []any{1, 2}}
	f.SetDevices(projA, []map[string]any{
		wittrafake.Device("D00124B001E2A1B2C", "Freezer 2", "tag"),
		wittrafake.Device("D0000000000000002", "", "beacon"), // name null
		odd,                                    // name absent, unknown type, unknown field
		{"name": "no id", "deviceType": "tag"}, // skipped
	})
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openQueue(t, path)
	c := newClient(t, f, func(c *Config) { c.Store = q.KV("wittra_api") })
	if w := c.Refresh(context.Background()); w != DefaultRefresh {
		t.Fatalf("Refresh after a good answer waits %v, want %v", w, DefaultRefresh)
	}
	wantDevice(t, c, projA, "D00124B001E2A1B2C", sinks.DeviceInfo{Name: "Freezer 2", Type: "tag"}, true)
	wantDevice(t, c, projA, "D0000000000000002", sinks.DeviceInfo{Type: "beacon"}, true)
	wantDevice(t, c, projA, "D0000000000000003", sinks.DeviceInfo{Type: "futureThing"}, true)
	wantDevice(t, c, projA, "D9999999999999999", sinks.DeviceInfo{}, false)
	wantDevice(t, c, projB, "D00124B001E2A1B2C", sinks.DeviceInfo{}, false)
	st := c.Stats()
	if st.Devices != 3 || st.Errors != 0 || !st.LastSuccess.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("Stats = %+v", st)
	}
	reqs := f.Requests()
	if len(reqs) != 1 {
		t.Fatalf("requests = %+v, want 1", reqs)
	}
	r := reqs[0]
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte(testOrg+":"+testKey))
	if r.Path != "/v1/organizations/"+testOrg+"/projects/"+projA+"/devices" || r.Authorization != wantAuth || r.Status != 200 {
		t.Fatalf("request = %+v", r)
	}

	// Restart: the API is gone, the names are not.
	f.Close()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openQueue(t, path)
	defer q.Close()
	c2 := newClient(t, f, func(c *Config) { c.Store = q.KV("wittra_api") })
	wantDevice(t, c2, projA, "D00124B001E2A1B2C", sinks.DeviceInfo{Name: "Freezer 2", Type: "tag"}, true)
	if w := c2.Refresh(context.Background()); w != MinBackoff {
		t.Fatalf("Refresh with the API down waits %v, want %v", w, MinBackoff)
	}
	wantDevice(t, c2, projA, "D00124B001E2A1B2C", sinks.DeviceInfo{Name: "Freezer 2", Type: "tag"}, true)
	snap, err := Load(q.KV("wittra_api"))
	if err != nil {
		t.Fatal(err)
	}
	wantDevice(t, snap, projA, "D0000000000000002", sinks.DeviceInfo{Type: "beacon"}, true)
}

// Errors keep the last good list and back off, doubling up to Refresh; a
// good answer resets the back-off. Nothing bad is ever kept.
func TestErrorsBackOffAndKeepNames(t *testing.T) {
	f := startFake(t)
	f.SetDevices(projA, []map[string]any{wittrafake.Device("D1", "Dock door", "tag")})
	c := newClient(t, f, func(c *Config) { c.Refresh = 5 * time.Minute })
	ctx := context.Background()
	if w := c.Refresh(ctx); w != 5*time.Minute {
		t.Fatalf("first refresh: wait %v", w)
	}
	steps := []struct {
		fault func()
		want  time.Duration
	}{
		{func() { f.Fail(http.StatusInternalServerError, 1, "") }, time.Minute},
		{func() { f.Fail(http.StatusBadGateway, 1, "") }, 2 * time.Minute},
		{func() { f.Garbage(`{"data":[]}`, 1) }, 4 * time.Minute}, // an envelope: not the list
		{func() { f.Garbage(`[{"deviceId":"D1"`, 1) }, 5 * time.Minute},
		{func() { f.Fail(http.StatusServiceUnavailable, 1, "") }, 5 * time.Minute},
	}
	for i, s := range steps {
		s.fault()
		if w := c.Refresh(ctx); w != s.want {
			t.Fatalf("step %d: wait %v, want %v", i, w, s.want)
		}
		wantDevice(t, c, projA, "D1", sinks.DeviceInfo{Name: "Dock door", Type: "tag"}, true)
	}
	if got := c.Stats().Errors; got != uint64(len(steps)) {
		t.Fatalf("errors = %d, want %d", got, len(steps))
	}
	if w := c.Refresh(ctx); w != 5*time.Minute {
		t.Fatalf("after recovery: wait %v", w)
	}
	if w := func() time.Duration { f.Fail(500, 1, ""); return c.Refresh(ctx) }(); w != time.Minute {
		t.Fatalf("back-off did not restart from the minimum: %v", w)
	}
}

// A 429 stops the round and waits as long as Retry-After says (seconds or
// an HTTP date), capped; other projects are not asked meanwhile.
func TestTooManyRequestsHonoursRetryAfter(t *testing.T) {
	f := startFake(t)
	f.SetDevices(projA, nil)
	f.SetDevices(projB, nil)
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	c := newClient(t, f, func(c *Config) { c.Projects = []string{projA, projB}; c.Clock = clk })
	ctx := context.Background()
	f.Fail(http.StatusTooManyRequests, 1, "120")
	if w := c.Refresh(ctx); w != 120*time.Second {
		t.Fatalf("Retry-After 120: wait %v", w)
	}
	if n := len(f.Requests()); n != 1 {
		t.Fatalf("after a 429 the round went on: %d requests", n)
	}
	f.Fail(http.StatusTooManyRequests, 1, clk.Now().Add(90*time.Minute).Format(http.TimeFormat))
	if w := c.Refresh(ctx); w != 90*time.Minute {
		t.Fatalf("Retry-After date: wait %v", w)
	}
	f.Fail(http.StatusTooManyRequests, 1, "999999999")
	if w := c.Refresh(ctx); w != MaxRetryAfter {
		t.Fatalf("huge Retry-After: wait %v, want the cap", w)
	}
	f.Fail(http.StatusTooManyRequests, 1, "")
	if w := c.Refresh(ctx); w != MinBackoff {
		t.Fatalf("429 without Retry-After: wait %v", w)
	}
}

// A wrong key is 401 and an unknown project 404: counted, the other
// projects still refreshed in the same round.
func TestUnauthorizedAndUnknownProject(t *testing.T) {
	f := startFake(t)
	f.SetDevices(projB, []map[string]any{wittrafake.Device("D2", "Lab", "tag")})
	c := newClient(t, f, func(c *Config) { c.Projects = []string{projA, projB} })
	if w := c.Refresh(context.Background()); w != MinBackoff {
		t.Fatalf("wait %v", w)
	}
	wantDevice(t, c, projB, "D2", sinks.DeviceInfo{Name: "Lab", Type: "tag"}, true)
	if reqs := f.Requests(); len(reqs) != 2 || reqs[0].Status != 404 || reqs[1].Status != 200 {
		t.Fatalf("requests = %+v", reqs)
	}

	bad := newClient(t, f, func(c *Config) { c.APIKey = "wrong"; c.Projects = []string{projB} })
	bad.Refresh(context.Background())
	if st := bad.Stats(); st.Errors != 1 || st.Devices != 0 || !st.LastSuccess.IsZero() {
		t.Fatalf("with a wrong key: %+v", st)
	}
	if reqs := f.Requests(); reqs[len(reqs)-1].Status != 401 {
		t.Fatalf("wrong key answered %d", reqs[len(reqs)-1].Status)
	}
}

// A slow API never holds up a lookup; the request times out and backs off.
func TestSlowAnswerNeverBlocksLookups(t *testing.T) {
	f := startFake(t)
	f.SetDevices(projA, []map[string]any{wittrafake.Device("D1", "Dock door", "tag")})
	c := newClient(t, f, func(c *Config) { c.Timeout = 2 * time.Second })
	c.Refresh(context.Background())
	f.Slow(time.Hour)
	done := make(chan time.Duration, 1)
	go func() { done <- c.Refresh(context.Background()) }()
	// Wait until the request is at the server, then look up while it hangs.
	if !testutil.Poll(30*time.Second, func() bool { return f.Held() != 0 }) {
		t.Fatal("the slow request never arrived")
	}
	select {
	case <-done:
		t.Fatal("refresh returned before its request could time out")
	default:
	}
	wantDevice(t, c, projA, "D1", sinks.DeviceInfo{Name: "Dock door", Type: "tag"}, true)
	select {
	case w := <-done:
		if w != MinBackoff {
			t.Fatalf("after a timeout: wait %v", w)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("refresh did not time out")
	}
	if c.Stats().Errors != 1 {
		t.Fatalf("timeout not counted: %+v", c.Stats())
	}
}

// A name edited in Wittra reaches lookups at the next refresh, and
// Changed fires; an unchanged list neither rewrites the store nor fires.
func TestRenameNotifies(t *testing.T) {
	f := startFake(t)
	f.SetDevices(projA, []map[string]any{wittrafake.Device("D1", "Freezer 2", "tag")})
	c := newClient(t, f, nil)
	var _ sinks.DirectoryNotifier = c
	ch := c.Changed()
	c.Refresh(context.Background())
	select {
	case <-ch:
	default:
		t.Fatal("first list did not fire Changed")
	}
	ch = c.Changed()
	c.Refresh(context.Background())
	select {
	case <-ch:
		t.Fatal("an unchanged list fired Changed")
	default:
	}
	f.SetDevices(projA, []map[string]any{wittrafake.Device("D1", "Freezer 3", "tag")})
	c.Refresh(context.Background())
	select {
	case <-ch:
	default:
		t.Fatal("a rename did not fire Changed")
	}
	wantDevice(t, c, projA, "D1", sinks.DeviceInfo{Name: "Freezer 3", Type: "tag"}, true)
}

// Without configured projects, the ones seen in webhooks are asked about;
// a newly seen one is fetched by the between-rounds pass, a known one not.
func TestSeenProjects(t *testing.T) {
	f := startFake(t)
	f.SetDevices(projA, []map[string]any{wittrafake.Device("D1", "A1", "tag")})
	f.SetDevices(projB, []map[string]any{wittrafake.Device("D2", "B2", "tag")})
	seen := []string{projA}
	c := newClient(t, f, func(c *Config) { c.Projects = nil; c.SeenProjects = func() []string { return seen } })
	c.Refresh(context.Background())
	wantDevice(t, c, projA, "D1", sinks.DeviceInfo{Name: "A1", Type: "tag"}, true)
	seen = []string{projA, projB, projB}
	if _, asked := c.refresh(context.Background(), true); !asked {
		t.Fatal("new project not asked about")
	}
	wantDevice(t, c, projB, "D2", sinks.DeviceInfo{Name: "B2", Type: "tag"}, true)
	if n := len(f.Requests()); n != 2 {
		t.Fatalf("requests = %d, want 2 (the known project not asked again)", n)
	}
	if _, asked := c.refresh(context.Background(), true); asked {
		t.Fatal("nothing new, yet asked")
	}
}

// Run refreshes at once and stops with its context.
func TestRun(t *testing.T) {
	f := startFake(t)
	f.SetDevices(projA, []map[string]any{wittrafake.Device("D1", "A1", "tag")})
	c := newClient(t, f, func(c *Config) { c.Clock = nil })
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { c.Run(ctx); close(stopped) }()
	if !testutil.Poll(30*time.Second, func() bool { return !c.Stats().LastSuccess.IsZero() }) {
		t.Fatal("Run never refreshed")
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Config)
	}{
		{"no org", func(c *Config) { c.OrganizationID = "" }},
		{"org with slash", func(c *Config) { c.OrganizationID = "a/b" }},
		{"no key", func(c *Config) { c.APIKey = "" }},
		{"ftp url", func(c *Config) { c.URL = "ftp://x" }},
		{"credentials in url", func(c *Config) { c.URL = "https://u:p@api.wittra.se" }},
		{"bad project", func(c *Config) { c.Projects = []string{"a/b"} }},
		{"negative refresh", func(c *Config) { c.Refresh = -time.Second }},
	} {
		cfg := Config{URL: DefaultURL, OrganizationID: testOrg, APIKey: testKey}
		tc.mut(&cfg)
		if _, err := New(cfg, zerolog.Nop()); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
