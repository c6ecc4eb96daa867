package bridge

import (
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/sinks"
	"wittra-gateway/wittra"
)

// DefaultProject is the project of a message when neither its body nor its
// route names one.
const DefaultProject = "default"

// DefaultMaxBody bounds a request body when the config leaves it zero.
const DefaultMaxBody = 1 << 20

// Route is one webhook target: a Wittra project integration.
type Route struct {
	Path           string
	Token          string   // "" = no auth
	Project        string   // project for bodies without projectId
	DevicePrefixes []string // accept only these device-id prefixes; others are dropped (counted)
}

// ReceiverConfig configures the webhook intake.
type ReceiverConfig struct {
	Routes  []Route
	MaxBody int64
	// MaxConcurrent bounds requests being handled at once; more get 503
	// at once, before their body is read. DefaultMaxConcurrent.
	MaxConcurrent int
	// LogInterval: a refusal is logged once per client address and code
	// per interval; the rest are counted. DefaultLogInterval.
	LogInterval time.Duration
	// Now is the clock of the refusal log limiter; time.Now when nil.
	Now func() time.Time
	// MaxDevices bounds the last-seen device table (Devices).
	// DefaultMaxDevices.
	MaxDevices int
}

// Defaults used when a ReceiverConfig field is zero.
const (
	DefaultMaxConcurrent = 512
	DefaultLogInterval   = time.Minute
)

// Appender is where accepted messages go: the durable queue.
type Appender interface {
	Append(ctx context.Context, entries []buffer.Entry) (buffer.AppendResult, error)
}

// Receiver is the webhook endpoint (docs/contract.md#webhook). It answers 200 only after
// every message of the request is committed to the queue.
type Receiver struct {
	routes  atomic.Pointer[map[string]*route] // replaced whole by SetRoutes
	maxBody int64
	queue   Appender
	log     zerolog.Logger
	bufs    sync.Pool
	noRoute RouteStats
	slots   chan struct{} // one per request being handled
	logs    *logLimiter
	now     func() time.Time

	devices     *deviceTable
	lastRequest atomic.Int64 // Unix ns
}

type route struct {
	Route
	rawToken, b64Token []byte
	stats              *RouteStats
}

// ReplyCodes are the HTTP codes the receiver answers with (docs/contract.md#webhook), in
// the order of RouteStats.Replies.
var ReplyCodes = [...]int{200, 400, 401, 404, 405, 413, 415, 503}

// RouteStats are one route's totals since start. Requests to no route are
// counted under the path "".
type RouteStats struct {
	Path       string
	Replies    [len(ReplyCodes)]atomic.Uint64
	Accepted   atomic.Uint64
	Duplicates atomic.Uint64
	Dropped    atomic.Uint64 // filtered out by device_prefixes
	// Refused counts the messages of requests answered 503 because the
	// queue was full (policy reject): not stored, the sender must retry.
	Refused atomic.Uint64
}

func (s *RouteStats) reply(code int) {
	for i, c := range ReplyCodes {
		if c == code {
			s.Replies[i].Add(1)
			return
		}
	}
}

// NewReceiver builds the webhook handler.
func NewReceiver(cfg ReceiverConfig, q Appender, log zerolog.Logger) *Receiver {
	// A value of 0 or below takes the default (max(v, 0) makes it 0 for cmp.Or).
	cfg.MaxBody = cmp.Or(max(cfg.MaxBody, 0), DefaultMaxBody)
	cfg.MaxConcurrent = cmp.Or(max(cfg.MaxConcurrent, 0), DefaultMaxConcurrent)
	cfg.LogInterval = cmp.Or(max(cfg.LogInterval, 0), DefaultLogInterval)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Receiver{
		maxBody: cfg.MaxBody,
		queue:   q,
		log:     log,
		slots:   make(chan struct{}, cfg.MaxConcurrent),
		logs:    newLogLimiter(cfg.LogInterval),
		now:     cfg.Now,
		devices: newDeviceTable(cfg.MaxDevices),
	}
	r.SetRoutes(cfg.Routes)
	r.bufs.New = func() any { return new(bytes.Buffer) }
	return r
}

// SetRoutes replaces the routes (paths, tokens, projects, device filters)
// while requests are served: a config reload. Requests already past the
// route lookup finish under the old route. Counters of paths that stay are
// kept.
func (r *Receiver) SetRoutes(routes []Route) {
	old := r.routes.Load()
	next := make(map[string]*route, len(routes))
	for _, rt := range routes {
		x := &route{Route: rt}
		if prev, ok := lookup(old, rt.Path); ok {
			x.stats = prev.stats
		} else {
			x.stats = &RouteStats{Path: rt.Path}
		}
		if rt.Token != "" {
			x.rawToken = []byte(rt.Token)
			x.b64Token = []byte(base64.StdEncoding.EncodeToString([]byte(rt.Token)))
		}
		next[rt.Path] = x
	}
	r.routes.Store(&next)
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.lastRequest.Store(r.now().UnixNano())
	rt, ok := (*r.routes.Load())[req.URL.Path]
	if !ok {
		r.fail(w, req, &r.noRoute, http.StatusNotFound, "no webhook route at this path")
		return
	}
	st := rt.stats
	select {
	case r.slots <- struct{}{}:
		defer func() { <-r.slots }()
	default:
		w.Header().Set("Retry-After", "1")
		r.fail(w, req, st, http.StatusServiceUnavailable, "too many concurrent requests")
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		r.fail(w, req, st, http.StatusMethodNotAllowed, "method not allowed: use POST")
		return
	}
	if rt.rawToken != nil && !rt.authorized(req.Header.Get("auth-token")) {
		r.fail(w, req, st, http.StatusUnauthorized, "missing or wrong auth-token")
		return
	}
	if !isJSON(req.Header.Get("Content-Type")) {
		r.fail(w, req, st, http.StatusUnsupportedMediaType, "content type must be application/json")
		return
	}
	if req.ContentLength > r.maxBody {
		r.fail(w, req, st, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", r.maxBody))
		return
	}
	buf := r.bufs.Get().(*bytes.Buffer)
	defer r.putBuf(buf)
	buf.Reset()
	if req.ContentLength > 0 {
		buf.Grow(int(req.ContentLength))
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, req.Body, r.maxBody)); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			r.fail(w, req, st, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", r.maxBody))
			return
		}
		r.fail(w, req, st, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	entries, dropped, err := rt.entries(buf.Bytes())
	if err != nil {
		r.fail(w, req, st, http.StatusBadRequest, err.Error())
		return
	}
	var res buffer.AppendResult
	if len(entries) > 0 {
		res, err = r.queue.Append(req.Context(), entries)
		if err != nil {
			retry := "10"
			if errors.Is(err, buffer.ErrFull) {
				retry = "30"
				st.Refused.Add(uint64(len(entries)))
			}
			w.Header().Set("Retry-After", retry)
			if ok, suppressed := r.logs.allow("queue", 0, "", r.now()); ok {
				r.log.Error().Err(err).Int("failed_since_last", suppressed).Msg("queue refused a webhook request")
			}
			r.fail(w, req, st, http.StatusServiceUnavailable, "queue unavailable: "+queueReason(err))
			return
		}
		r.devices.note(entries, time.Now())
	}
	st.Accepted.Add(uint64(res.Accepted))
	st.Duplicates.Add(uint64(res.Duplicates))
	st.Dropped.Add(uint64(dropped))
	st.reply(http.StatusOK)
	switch {
	case dropped == 0 && res == buffer.AppendResult{Accepted: 1}:
		replyOneNew.write(w)
		return
	case dropped == 0 && res == buffer.AppendResult{Duplicates: 1}:
		replyOneDup.write(w)
		return
	}
	reply := fmt.Sprintf(`{"accepted":%d,"duplicates":%d}`, res.Accepted, res.Duplicates)
	if dropped > 0 {
		// Only then, so replies without a device filter stay as they were.
		reply = fmt.Sprintf(`{"accepted":%d,"duplicates":%d,"filtered":%d}`, res.Accepted, res.Duplicates, dropped)
	}
	writeJSON(w, http.StatusOK, reply)
}

// putBuf returns a body buffer to the pool unless a huge body grew it.
func (r *Receiver) putBuf(b *bytes.Buffer) {
	if int64(b.Cap()) <= 64<<10 {
		r.bufs.Put(b)
	}
}

func queueReason(err error) string {
	switch {
	case errors.Is(err, buffer.ErrFull):
		return "queue full"
	case errors.Is(err, buffer.ErrClosed):
		return "shutting down"
	default:
		return "storage error"
	}
}

func (r *Receiver) fail(w http.ResponseWriter, req *http.Request, st *RouteStats, code int, msg string) {
	st.reply(code)
	if code < 500 || code == http.StatusServiceUnavailable {
		if ok, suppressed := r.logs.allow(req.RemoteAddr, code, msg, r.now()); ok {
			r.log.Warn().Int("code", code).Str("path", req.URL.Path).Str("remote", req.RemoteAddr).
				Str("error", msg).Int("suppressed_since_last", suppressed).Msg("webhook request refused")
		}
	}
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	writeJSON(w, code, string(b))
}

// Header values shared by every reply: net/http only reads them, and the
// hot path saves the slices Header.Set would allocate.
var jsonContentType = []string{"application/json"}

func writeJSON(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(code)
	io.WriteString(w, body+"\n")
}

// cannedReply is a 200 reply built once: its body and Content-Length.
type cannedReply struct {
	body   []byte
	length []string
}

func newCannedReply(body string) cannedReply {
	body += "\n"
	return cannedReply{body: []byte(body), length: []string{strconv.Itoa(len(body))}}
}

// The replies of nearly every request: one new message, one duplicate.
var (
	replyOneNew = newCannedReply(`{"accepted":1,"duplicates":0}`)
	replyOneDup = newCannedReply(`{"accepted":0,"duplicates":1}`)
)

func (c cannedReply) write(w http.ResponseWriter) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = c.length
	w.WriteHeader(http.StatusOK)
	w.Write(c.body)
}

// Stats returns every route's counters, the unmatched-path counters last.
func (r *Receiver) Stats() []*RouteStats {
	routes := *r.routes.Load()
	out := make([]*RouteStats, 0, len(routes)+1)
	for _, rt := range routes {
		out = append(out, rt.stats)
	}
	return append(out, &r.noRoute)
}

func (rt *route) authorized(got string) bool {
	g := []byte(got)
	// Both comparisons always run so timing does not tell which form matched.
	b64 := subtle.ConstantTimeCompare(g, rt.b64Token)
	raw := subtle.ConstantTimeCompare(g, rt.rawToken)
	return b64|raw == 1
}

func isJSON(contentType string) bool {
	if contentType == "application/json" { // what Wittra sends: no parse
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// entries splits a body into queue entries: one JSON object, or an array of
// objects. Any bad message fails the whole request, so a rejected request
// leaves nothing in the queue.
func (rt *route) entries(body []byte) (entries []buffer.Entry, dropped int, err error) {
	if !json.Valid(body) {
		var raw json.RawMessage
		err := json.Unmarshal(body, &raw)
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			// Offset counts the bytes read, the culprit included.
			return nil, 0, fmt.Errorf("body is not JSON: %s at byte offset %d", syn.Error(), max(0, syn.Offset-1))
		}
		return nil, 0, errors.New("body is not JSON")
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(trimmed) > 0 && trimmed[0] == '{':
		e, keep, err := rt.entry(body, "")
		if err != nil {
			return nil, 0, err
		}
		if !keep {
			return nil, 1, nil
		}
		return []buffer.Entry{e}, 0, nil
	case len(trimmed) > 0 && trimmed[0] == '[':
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.Token() // '[' — the body is known to be valid
		for i := 0; dec.More(); i++ {
			at := dec.InputOffset()
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, 0, fmt.Errorf("element %d at byte offset %d: %w", i, at, err)
			}
			if len(raw) == 0 || raw[0] != '{' {
				// InputOffset is before the separator; point past it.
				return nil, 0, fmt.Errorf("element %d at byte offset %d is not an object", i, elementStart(body, at))
			}
			e, keep, err := rt.entry(raw, fmt.Sprintf("element %d at byte offset %d: ", i, elementStart(body, at)))
			if err != nil {
				return nil, 0, err
			}
			if keep {
				entries = append(entries, e)
			} else {
				dropped++
			}
		}
		return entries, dropped, nil
	default:
		return nil, 0, fmt.Errorf("body at byte offset %d is not a JSON object or array of objects", len(body)-len(trimmed))
	}
}

// elementStart skips the separator and blanks that follow offset at.
func elementStart(body []byte, at int64) int64 {
	for at < int64(len(body)) && strings.IndexByte(", \t\r\n", body[at]) >= 0 {
		at++
	}
	return at
}

// entry derives one message's identity and builds its queue entry; keep is
// false when the route's device filter drops it.
func (rt *route) entry(obj []byte, where string) (e buffer.Entry, keep bool, err error) {
	id, err := wittra.Identify(obj)
	if err != nil {
		return e, false, fmt.Errorf("%s%w", where, err)
	}
	device := id.Device
	if device == "" {
		device = sinks.UnknownDevice
	} else if len(rt.DevicePrefixes) > 0 && !hasAnyPrefix(device, rt.DevicePrefixes) {
		return e, false, nil
	}
	project := id.Project
	if project == "" {
		project = rt.Project
	}
	if project == "" {
		project = DefaultProject
	}
	// An id unsafe as a topic level is escaped, not refused: the reading is
	// kept and published under the escaped id.
	if device, err = wittra.TopicID(device); err != nil {
		return e, false, fmt.Errorf("%sdevice id: %w", where, err)
	}
	if project, err = wittra.TopicID(project); err != nil {
		return e, false, fmt.Errorf("%sproject id: %w", where, err)
	}
	kind := sinks.KindData
	if id.Event {
		kind = sinks.KindEvent
	}
	return buffer.Entry{
		Data:     appendEnvelope(make([]byte, 0, len(obj)+len(project)+len(device)+4), kind, project, device, obj),
		DedupKey: id.PayloadID,
	}, true, nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func lookup(routes *map[string]*route, path string) (*route, bool) {
	if routes == nil {
		return nil, false
	}
	rt, ok := (*routes)[path]
	return rt, ok
}
