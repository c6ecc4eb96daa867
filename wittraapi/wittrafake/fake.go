// Package wittrafake is a test double of the Wittra REST API's device list,
// GET /v1/organizations/<org>/projects/<project>/devices, on 127.0.0.1 with
// a port the system chooses.
//
// What it encodes, and how sure each point is (public sources: Wittra's
// API documentation at docs.wittra.io and third-party clients):
//   - Documented (docs.wittra.io): base URL and the /v1/organizations/<org>/
//     projects/<project>/devices path; Basic auth base64("<org id>:<api
//     key>"), one key per organization valid for all its projects.
//   - Seen in real v1 output / third-party clients with live access, not
//     documented: the answer is a bare JSON array, not paginated, no
//     envelope; elements carry deviceId, name (nullable; absent in some
//     versions), deviceType (tag, beacon, meshrouter, gateway, others),
//     lastSeen, latest, and more fields the gateway ignores; missing values
//     are null, never "".
//   - Assumed (no public source): the content type is application/json; a
//     missing or wrong Basic login, or a login whose user part is not the
//     organization in the path, is 401; an unknown organization or project
//     is 404 (never 403) with a {"detail": "..."} body (as in a third-party
//     mock); there is no rate limit documented, so 429 with Retry-After
//     (seconds) exists here only when a test injects it; 5xx bodies are
//     plain text; the list needs no query parameters.
//
// Faults: Fail (a status, optionally with Retry-After, for the next n
// requests), Slow (every answer waits), Garbage (the next answers are this
// body). Requests records every request for assertions.
package wittrafake

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Request is one request the fake got.
type Request struct {
	Method, Path, Authorization, Accept string
	Status                              int // what the fake answered
}

// Server is a running fake.
type Server struct {
	org, key string
	srv      *http.Server
	ln       net.Listener

	mu       sync.Mutex
	projects map[string][]map[string]any // project → device elements as sent
	faults   []fault
	slow     time.Duration
	held     int // slow requests being held now
	reqs     []Request
	closing  chan struct{}
}

type fault struct {
	status     int
	retryAfter string // "" = no header
	body       string // for status 200: a raw body (garbage)
}

// Start serves org's projects (none yet) for key.
func Start(org, key string) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{org: org, key: key, ln: ln, projects: map[string][]map[string]any{}, closing: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/organizations/{org}/projects/{project}/devices", s.devices)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.record(r, http.StatusNotFound)
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not Found"})
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// URL is the base URL to configure (http://127.0.0.1:port).
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server, ending slow answers at once.
func (s *Server) Close() error {
	s.mu.Lock()
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// SetDevices replaces a project's device list; each element is sent as
// given (use nil values for JSON null; leave keys out to have them absent).
// A project is known (200 with []) once set, even to an empty list.
func (s *Server) SetDevices(project string, devices []map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.projects[project] = append([]map[string]any{}, devices...)
}

// Device is a convenience: an element shaped as the v4 list shows one.
// An empty name is sent as null.
func Device(id, name, typ string) map[string]any {
	d := map[string]any{
		"deviceId": id, "deviceType": typ, "name": nil,
		"isPositioningActive": true, "fixedLocation": nil, "color": nil, "group": nil,
		"lastSeen": "2025-06-10T12:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z",
		"latest": map[string]any{"telemetryId": "6f1c1c7e-0000-4000-8000-000000000000",
			"data": map[string]any{"temperature": map[string]any{"timestamp": "2025-06-10 12:00:00+00:00", "value": 21.5}}},
	}
	if name != "" {
		d["name"] = name
	}
	return d
}

// Fail makes the next n requests answer status; retryAfter, when not "",
// is sent as the Retry-After header.
func (s *Server) Fail(status, n int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, fault{status: status, retryAfter: retryAfter})
	}
}

// Garbage makes the next n requests answer 200 with body.
func (s *Server) Garbage(body string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, fault{status: http.StatusOK, body: body})
	}
}

// Slow makes every answer wait d first (0: answer at once).
func (s *Server) Slow(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slow = d
}

// Held is how many requests are waiting out Slow right now.
func (s *Server) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// Requests returns every request so far (a slow one once answered).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

func (s *Server) record(r *http.Request, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, Request{Method: r.Method, Path: r.URL.Path, Authorization: r.Header.Get("Authorization"), Accept: r.Header.Get("Accept"), Status: status})
}

func (s *Server) devices(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	slow := s.slow
	if slow > 0 {
		s.held++
	}
	s.mu.Unlock()
	if slow > 0 {
		defer func() {
			s.mu.Lock()
			s.held--
			s.mu.Unlock()
		}()
		t := time.NewTimer(slow)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.record(r, 0)
			return
		case <-s.closing:
			t.Stop()
			s.record(r, 0)
			return
		}
	}
	if detail := s.checkAuth(r); detail != "" {
		s.record(r, http.StatusUnauthorized)
		w.Header().Set("WWW-Authenticate", `Basic realm="api"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"detail": detail})
		return
	}
	s.mu.Lock()
	var f *fault
	if len(s.faults) > 0 {
		f = &s.faults[0]
		s.faults = s.faults[1:]
	}
	list, known := s.projects[r.PathValue("project")]
	var body []byte
	if known && f == nil {
		body, _ = json.Marshal(list)
	}
	s.mu.Unlock()
	switch {
	case f != nil && f.status == http.StatusOK:
		s.record(r, http.StatusOK)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(f.body))
	case f != nil:
		s.record(r, f.status)
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		if f.status == http.StatusTooManyRequests {
			writeJSON(w, f.status, map[string]string{"detail": "Too Many Requests"})
		} else {
			http.Error(w, http.StatusText(f.status), f.status)
		}
	case r.PathValue("org") != s.org || !known:
		s.record(r, http.StatusNotFound)
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not Found"})
	default:
		s.record(r, http.StatusOK)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}
}

// checkAuth: Basic base64(org:key), the user part being the path's org.
// It returns the 401 body's detail (FastAPI's texts, as in the third-party
// mock), "" when the login is good.
func (s *Server) checkAuth(r *http.Request) string {
	h := r.Header.Get("Authorization")
	enc, isBasic := strings.CutPrefix(h, "Basic ")
	if !isBasic {
		return "Not authenticated"
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return "Invalid authentication credentials"
	}
	user, pass, found := strings.Cut(string(raw), ":")
	if !found || user != r.PathValue("org") || user != s.org || pass != s.key {
		return "Invalid authentication credentials"
	}
	return ""
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
