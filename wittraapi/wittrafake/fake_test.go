package wittrafake

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func get(t *testing.T, url, user, pass string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if user != "" {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// The fake answers as its package doc says: a bare array for a known
// project with the right login, 401 for any other login (including the key
// of this org used under another org's path), 404 with {"detail"} for an
// unknown org or project, injected faults in order.
func TestFakeAnswers(t *testing.T) {
	s, err := Start("org1", "key1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDevices("p1", []map[string]any{Device("D1", "Freezer", "tag"), Device("D2", "", "beacon")})
	base := s.URL() + "/v1/organizations/"
	code, body, h := get(t, base+"org1/projects/p1/devices", "org1", "key1")
	var list []map[string]any
	if code != 200 || h.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &list) != nil || len(list) != 2 {
		t.Fatalf("good request: %d %s", code, body)
	}
	if list[0]["name"] != "Freezer" || list[1]["name"] != nil || list[1]["deviceType"] != "beacon" {
		t.Fatalf("list = %v", list)
	}
	for _, tc := range []struct {
		path, user, pass string
		code             int
		detail           string
	}{
		{"org1/projects/p1/devices", "", "", 401, "Not authenticated"},
		{"org1/projects/p1/devices", "org1", "wrong", 401, "Invalid authentication credentials"},
		{"org2/projects/p1/devices", "org1", "key1", 401, "Invalid authentication credentials"},
		{"org2/projects/p1/devices", "org2", "key1", 401, "Invalid authentication credentials"},
		{"org1/projects/nope/devices", "org1", "key1", 404, "Not Found"},
		{"org1/projects/p1/things", "org1", "key1", 404, "Not Found"},
	} {
		code, body, _ := get(t, base+tc.path, tc.user, tc.pass)
		var e struct{ Detail string }
		if code != tc.code || json.Unmarshal([]byte(body), &e) != nil || e.Detail != tc.detail {
			t.Errorf("%s as %s: %d %s, want %d %q", tc.path, tc.user, code, body, tc.code, tc.detail)
		}
	}
	s.Fail(429, 1, "30")
	s.Fail(503, 1, "")
	s.Garbage(`[{"deviceId":`, 1)
	url := base + "org1/projects/p1/devices"
	if code, _, h := get(t, url, "org1", "key1"); code != 429 || h.Get("Retry-After") != "30" {
		t.Errorf("429 fault: %d %v", code, h)
	}
	if code, _, _ := get(t, url, "org1", "key1"); code != 503 {
		t.Errorf("503 fault: %d", code)
	}
	if code, body, _ := get(t, url, "org1", "key1"); code != 200 || !strings.HasPrefix(body, `[{"deviceId":`) || json.Valid([]byte(body)) {
		t.Errorf("garbage fault: %d %s", code, body)
	}
	if code, _, _ := get(t, url, "org1", "key1"); code != 200 {
		t.Errorf("after the faults: %d", code)
	}
	if n := len(s.Requests()); n != 11 {
		t.Errorf("requests recorded = %d, want 11", n)
	}
}
