package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"

	"golang.org/x/crypto/bcrypt"
)

// The status page under a real gateway (in-process, loopback listeners)
// with an mqtt sink to Debian's mosquitto and the embedded broker's sink.

// apiStatus is GET /api/status as documented in README ("Status page"):
// the field names here are the contract, spelled out again on purpose.
type apiStatus struct {
	Schema  int       `json:"schema"`
	Time    time.Time `json:"time"`
	Gateway struct {
		ID             string    `json:"id"`
		Version        string    `json:"version"`
		Started        time.Time `json:"started"`
		UptimeSeconds  float64   `json:"uptime_seconds"`
		RefreshSeconds float64   `json:"refresh_seconds"`
	} `json:"gateway"`
	Listeners []struct {
		Name    string `json:"name"`
		Scheme  string `json:"scheme"`
		Address string `json:"address"`
	} `json:"listeners"`
	Intake struct {
		RatePerSecond   float64           `json:"rate_per_second"`
		AcceptedTotal   uint64            `json:"accepted_total"`
		DuplicatesTotal uint64            `json:"duplicates_total"`
		LastRequest     *time.Time        `json:"last_request"`
		Refusals        map[string]uint64 `json:"refusals"`
		RateHistory     []float64         `json:"rate_history"`
	} `json:"intake"`
	Queue struct {
		Messages         uint64  `json:"messages"`
		Bytes            int64   `json:"bytes"`
		MaxBytes         int64   `json:"max_bytes"`
		FileBytes        int64   `json:"file_bytes"`
		OldestAgeSeconds float64 `json:"oldest_age_seconds"`
		DeadLetters      uint64  `json:"dead_letters"`
	} `json:"queue"`
	Sinks   []apiSink `json:"sinks"`
	Devices struct {
		Tracked int `json:"tracked"`
		Matched int `json:"matched"`
		Items   []struct {
			ID         string     `json:"id"`
			Name       *string    `json:"name"`
			Project    string     `json:"project"`
			LastSeen   time.Time  `json:"last_seen"`
			MeasuredAt *time.Time `json:"measured_at"`
			Values     []struct {
				Path  string `json:"path"`
				Value string `json:"value"`
			} `json:"values"`
		} `json:"items"`
	} `json:"devices"`
	History struct {
		IntervalSeconds float64 `json:"interval_seconds"`
		SpanSeconds     float64 `json:"span_seconds"`
	} `json:"history"`
}

type apiSink struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	State string `json:"state"`
	Link  *struct {
		Connected bool       `json:"connected"`
		Since     *time.Time `json:"since"`
		LastError string     `json:"last_error"`
	} `json:"link"`
	Depth                 uint64     `json:"depth"`
	OldestAgeSeconds      float64    `json:"oldest_age_seconds"`
	DeliveryRatePerSecond float64    `json:"delivery_rate_per_second"`
	DeliveredTotal        uint64     `json:"delivered_total"`
	DeadLetters           uint64     `json:"dead_letters"`
	LastSuccess           *time.Time `json:"last_success"`
	LastError             string     `json:"last_error"`
	LastErrorAt           *time.Time `json:"last_error_at"`
	DepthHistory          []uint64   `json:"depth_history"`
}

func (a *apiStatus) sink(t *testing.T, name string) apiSink {
	t.Helper()
	for _, s := range a.Sinks {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no sink %q in %+v", name, a.Sinks)
	return apiSink{}
}

// getStatus reads /api/status (with query, e.g. "?q=x"); it fails the test
// on anything but a 200 with JSON.
func getStatus(t *testing.T, admin, query string) apiStatus {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(admin + "/api/status" + query)
	if err != nil {
		t.Fatalf("GET /api/status: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /api/status: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var st apiStatus
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("decode /api/status: %v\n%s", err, b)
	}
	return st
}

// statusRig is a gateway with sinks plant (mqtt to mosquitto) and local
// (embedded broker), mosquitto running.
type statusRig struct {
	gw   *outageGW
	mosq *testutil.Mosquitto
	http *http.Client
}

func startStatusRig(t *testing.T) *statusRig {
	t.Helper()
	m := outageNewMosq(t)
	m.Start()
	gw := outageStartInProc(t, outageMQTTSink(m.URL())+", {name: local, type: broker, topic_prefix: wittra}", "")
	return &statusRig{gw: gw, mosq: m, http: outageHTTPClient(t, 4)}
}

// post sends n messages spread over devices 0..devices-1, starting at seq.
func (r *statusRig) post(t *testing.T, seq, n, devices int) {
	t.Helper()
	for i := range n {
		s := int64(seq + i)
		code, body, _, err := testutil.Post(r.http, r.gw.webhook, outageBody(outageDevice(int(s)%devices), fmt.Sprintf("status-%d", s), s))
		if err != nil || code != 200 {
			t.Fatalf("post %d: %d %s %v", s, code, body, err)
		}
	}
}

// refuse sends one request of each kind the receiver refuses: bad JSON
// (400), wrong content type (415), wrong method (405).
func (r *statusRig) refuse(t *testing.T) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.gw.webhook, strings.NewReader("{nope"))
	req.Header.Set("Content-Type", "application/json")
	for _, q := range []*http.Request{req} {
		if resp, err := r.http.Do(q); err == nil {
			resp.Body.Close()
		}
	}
	if resp, err := r.http.Post(r.gw.webhook, "text/plain", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
	}
	if resp, err := r.http.Get(r.gw.webhook); err == nil {
		resp.Body.Close()
	}
}

func waitStatus(t *testing.T, admin, what string, cond func(apiStatus) bool) apiStatus {
	t.Helper()
	var st apiStatus
	outageWait(t, 60*time.Second, what, func() bool {
		st = getStatus(t, admin, "")
		return cond(st)
	})
	return st
}

func TestStatusAPIUnderTrafficAndOutage(t *testing.T) {
	r := startStatusRig(t)
	admin := r.gw.admin

	st := getStatus(t, admin, "")
	if st.Schema != 1 || st.Gateway.ID != "outage-gw" || st.Gateway.RefreshSeconds != 1 || st.History.IntervalSeconds != 1 || st.History.SpanSeconds != 3600 {
		t.Fatalf("header: %+v %+v", st.Gateway, st.History)
	}
	schemes := map[string]string{}
	for _, l := range st.Listeners {
		schemes[l.Name] = l.Scheme + "://" + l.Address
	}
	if schemes["webhook"] != "http://"+r.gw.g.webhookLn.Addr().String() || schemes["admin"] != admin || schemes["broker"] != "mqtt://"+strings.TrimPrefix(r.gw.broker, "tcp://") {
		t.Fatalf("listeners: %v", schemes)
	}
	if st.Intake.LastRequest != nil || st.Intake.AcceptedTotal != 0 {
		t.Fatalf("before traffic: %+v", st.Intake)
	}

	// Traffic: 30 messages from 3 devices, and three refusals.
	r.post(t, 0, 30, 3)
	r.refuse(t)
	st = waitStatus(t, admin, "both sinks deliver the 30 messages", func(s apiStatus) bool {
		p, l := s.sink(t, "plant"), s.sink(t, "local")
		return p.DeliveredTotal == 30 && l.DeliveredTotal == 30 && p.Depth == 0 && l.Depth == 0 // acknowledged too
	})
	in := st.Intake
	if in.AcceptedTotal != 30 || in.RatePerSecond <= 0 || in.LastRequest == nil || time.Since(*in.LastRequest) > time.Minute {
		t.Fatalf("intake: %+v", in)
	}
	if in.Refusals["400"] != 1 || in.Refusals["415"] != 1 || in.Refusals["405"] != 1 || in.Refusals["200"] != 0 {
		t.Fatalf("refusals: %v", in.Refusals)
	}
	if st.Queue.MaxBytes <= 0 || st.Queue.FileBytes <= 0 {
		t.Fatalf("queue: %+v", st.Queue)
	}
	plant := st.sink(t, "plant")
	if plant.Type != "mqtt" || plant.State != "ok" || plant.Link == nil || !plant.Link.Connected || plant.Link.Since == nil ||
		plant.LastSuccess == nil || plant.DeliveryRatePerSecond <= 0 || plant.Depth != 0 {
		t.Fatalf("plant while up: %+v link %+v", plant, plant.Link)
	}
	local := st.sink(t, "local")
	if local.Type != "broker" || local.State != "ok" || local.Link != nil {
		t.Fatalf("local: %+v", local)
	}
	if st.Devices.Tracked != 3 || len(st.Devices.Items) != 3 {
		t.Fatalf("devices: %+v", st.Devices)
	}
	d := st.Devices.Items[0]
	vals := map[string]string{}
	for _, v := range d.Values {
		vals[v.Path] = v.Value
	}
	if d.Name != nil || d.Project != outageProject || d.MeasuredAt == nil || vals["temperature"] != "21.75" || vals["battery/percentage"] != "75" {
		t.Fatalf("device: %+v values %v", d, vals)
	}
	// The most recent first: message 29 came from device 29 % 3.
	if d.ID != outageDevice(29%3) {
		t.Fatalf("first device %s, want the latest sender %s", d.ID, outageDevice(29%3))
	}
	found := getStatus(t, admin, "?q="+strings.ToLower(outageDevice(1)))
	if found.Devices.Matched != 1 || len(found.Devices.Items) != 1 || found.Devices.Items[0].ID != outageDevice(1) {
		t.Fatalf("search: %+v", found.Devices)
	}

	// Outage: mosquitto stops; plant turns down with the reason, its
	// backlog grows; local keeps delivering.
	r.mosq.Stop(syscall.SIGTERM)
	st = waitStatus(t, admin, "plant shows down", func(s apiStatus) bool {
		p := s.sink(t, "plant")
		return p.State == "down" && p.Link != nil && !p.Link.Connected
	})
	r.post(t, 30, 10, 3)
	st = waitStatus(t, admin, "plant shows its backlog and the error", func(s apiStatus) bool {
		p := s.sink(t, "plant")
		return p.Depth == 10 && p.LastError != "" && p.LastErrorAt != nil && s.sink(t, "local").DeliveredTotal == 40 && p.OldestAgeSeconds > 0
	})
	plant = st.sink(t, "plant")
	if plant.State != "down" || plant.DeliveredTotal != 30 || !strings.Contains(plant.LastError, "not connected") {
		t.Fatalf("plant during the outage: %+v", plant)
	}
	if st.Queue.Messages < 10 || st.Queue.OldestAgeSeconds <= 0 || st.Queue.Bytes <= 0 || st.sink(t, "local").State != "ok" {
		t.Fatalf("queue during the outage: %+v", st.Queue)
	}
	if since := plant.Link.Since; since == nil || time.Since(*since) > time.Minute {
		t.Fatalf("down since: %v", since)
	}
	st = waitStatus(t, admin, "history records plant's backlog", func(s apiStatus) bool {
		h := s.sink(t, "plant").DepthHistory
		return len(h) > 1 && h[len(h)-1] == 10 && len(s.Intake.RateHistory) == len(h)-1
	})

	// Back: plant turns ok, delivers the backlog, the error stays as history.
	r.mosq.Start()
	st = waitStatus(t, admin, "plant back to ok with its backlog delivered", func(s apiStatus) bool {
		p := s.sink(t, "plant")
		return p.State == "ok" && p.Depth == 0 && p.DeliveredTotal == 40 && p.Link != nil && p.Link.Connected
	})
	plant = st.sink(t, "plant")
	if plant.LastError == "" || plant.LastSuccess == nil || plant.LastErrorAt == nil || !plant.LastSuccess.After(*plant.LastErrorAt) {
		t.Fatalf("plant after the outage: %+v", plant)
	}
}

func TestStatusPageHeadersAndMethods(t *testing.T) {
	dir := t.TempDir()
	tg := startTestGateway(t, dir, map[string]string{"admin": "admin: {listen: 127.0.0.1:0}"})
	admin := "http://" + tg.g.adminLn.Addr().String()
	c := http.Client{Timeout: 10 * time.Second}
	for _, path := range []string{"/", "/status"} {
		resp, err := c.Get(admin + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		if resp.StatusCode != 200 || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") ||
			!strings.Contains(string(b), "test-gw") || strings.Contains(string(b), "<script>") {
			t.Fatalf("GET %s: %d CSP %q\n%s", path, resp.StatusCode, csp, b)
		}
	}
	for _, path := range []string{"/static/status.js", "/static/status.css", "/static/favicon.svg"} {
		resp, err := c.Get(admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
	}
	// Nothing on the page changes state: other methods are refused.
	for _, path := range []string{"/", "/status", "/api/status"} {
		resp, err := c.Post(admin+path, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("POST %s: %d, want 405", path, resp.StatusCode)
		}
	}
}

func TestAdminUsersGuardTheAdminListener(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("on-site pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tg := startTestGateway(t, dir, map[string]string{
		"admin": fmt.Sprintf("admin: {listen: 127.0.0.1:0, users: [{username: tech, password: %s}]}", yamlString(string(hash))),
	})
	admin := "http://" + tg.g.adminLn.Addr().String()
	c := http.Client{Timeout: 10 * time.Second}
	get := func(path, user, pass string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, admin+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, p := range []string{"/", "/status", "/api/status", "/metrics", "/static/status.js"} {
		if code := get(p, "", ""); code != 401 {
			t.Errorf("GET %s without credentials: %d, want 401", p, code)
		}
		if code := get(p, "tech", "wrong"); code != 401 {
			t.Errorf("GET %s with a wrong password: %d, want 401", p, code)
		}
		if code := get(p, "tech", "on-site pw"); code != 200 {
			t.Errorf("GET %s with credentials: %d, want 200", p, code)
		}
	}
	// Probes stay open for systemd and load balancers.
	for _, p := range []string{"/healthz", "/readyz"} {
		if code := get(p, "", ""); code != 200 {
			t.Errorf("GET %s without credentials: %d, want 200", p, code)
		}
	}
}

func TestAdminUsersConfig(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hash"), append(hash, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig([]byte("admin: {users: [{username: a, password: "+yamlString(string(hash))+"}, {username: b, password_file: hash}]}\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Admin.Users) != 2 || cfg.Admin.Users[1].PasswordHash != string(hash) {
		t.Fatalf("users: %+v", cfg.Admin.Users)
	}
	if r := cfg.Redacted(); r.Admin.Users[0].PasswordHash != "REDACTED" || cfg.Admin.Users[0].PasswordHash != string(hash) {
		t.Fatalf("redacted: %+v / %+v", r.Admin.Users, cfg.Admin.Users)
	}
	_, err = ParseConfig([]byte("admin:\n  users:\n    - {username: a, password: plain-SECRETX}\n    - {username: a, password: "+yamlString(string(hash))+"}\n    - {password: "+yamlString(string(hash))+"}\n"), dir)
	msg := fmt.Sprint(err)
	for _, want := range []string{"line 3: admin.users[0].password: must be a bcrypt hash", "admin.users[1].username: duplicate", "admin.users[2].username: required"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "SECRETX") {
		t.Errorf("error echoes the password: %s", msg)
	}
}
