// Package status is the technician's status page of the gateway and its
// JSON twin, GET /api/status. It knows nothing of the components: the
// composition root hands it a Reading of their counters, and this package
// turns successive readings into rates, ages and an hour of history.
package status

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/clock"
	"wittra-gateway/wittra"
)

// Defaults used when a Config field is zero.
const (
	DefaultSampleEvery = 10 * time.Second
	DefaultHistory     = time.Hour
	DefaultRefresh     = 5 * time.Second
	// DefaultDevices is how many devices a report lists when the request
	// does not say.
	DefaultDevices = 100
)

// Bounds of what one device shows: more values are cut (the count says
// so), longer value texts end in "…".
const (
	maxValues   = 40
	maxValueLen = 120
)

// rateWindow is the span intake and delivery rates are averaged over.
const rateWindow = time.Minute

// Config configures the status page.
type Config struct {
	GatewayID string
	Version   string
	Commit    string
	Started   time.Time
	Listeners []Listener
	// Read returns the components' state now; it is called by the sampler
	// and for each request, and must be safe for concurrent use.
	Read func() Reading
	// SampleEvery is the history's resolution; History its span. The ring
	// holds History/SampleEvery samples (360 by default), each a few
	// words per sink: tens of KiB at most.
	SampleEvery time.Duration
	History     time.Duration
	// Refresh is how often the page polls /api/status.
	Refresh time.Duration
	Now     func() time.Time // clock; time.Now when nil
	Log     zerolog.Logger
}

func (c *Config) validate() error {
	var errs []error
	if c.Read == nil {
		errs = append(errs, errors.New("status: Read is required"))
	}
	if c.SampleEvery < 0 || c.History < 0 || c.Refresh < 0 {
		errs = append(errs, errors.New("status: durations must not be negative"))
	}
	if c.SampleEvery > 0 && c.History > 0 && c.History < c.SampleEvery {
		errs = append(errs, fmt.Errorf("status: history %v shorter than one sample (%v)", c.History, c.SampleEvery))
	}
	return errors.Join(errs...)
}

// Listener is one network listener of the gateway.
type Listener struct {
	Name    string `json:"name"`    // webhook, admin, broker
	Scheme  string `json:"scheme"`  // http, https, mqtt, mqtts, ws, wss
	Address string `json:"address"` // host:port as bound
}

// Reading is the components' raw state at one instant: totals since start
// and current levels.
type Reading struct {
	Intake  IntakeReading
	Queue   QueueReading
	Sinks   []SinkReading // same names in the same order every time
	Devices []DeviceReading
}

// IntakeReading is the webhook receiver's state.
type IntakeReading struct {
	Accepted, Duplicates, Filtered uint64
	Replies                        map[int]uint64 // by HTTP code, since start
	LastRequest                    time.Time      // zero before the first
}

// QueueReading is the durable queue's state.
type QueueReading struct {
	Messages    uint64
	Bytes       int64
	MaxBytes    int64
	FileBytes   int64
	DeadLetters uint64
	Dropped     uint64 // deleted by when_full: drop_oldest
	Expired     uint64 // deleted by max_age
	Err         error  // the queue could not be read
}

// SinkReading is one sink's state.
type SinkReading struct {
	Name, Type  string
	Link        *LinkReading // nil for sinks without a connection
	Depth       uint64
	Oldest      time.Time // receive time of its oldest undelivered message
	Delivered   uint64
	Failures    uint64
	DeadLetters uint64
	LastSuccess time.Time
	LastFailure time.Time
	LastError   string
}

// LinkReading is a sink's connection.
type LinkReading struct {
	Connected bool
	Since     time.Time
	LastError string
}

// DeviceReading is one last-seen device.
type DeviceReading struct {
	ID, Name, Project string
	Type              string // device type from the Wittra API, when known
	Kind              string // data | event
	LastSeen          time.Time
	Messages          uint64
	Body              []byte // latest message; nil when it was too large to keep
	BodyLen           int
}

// Status samples the components and serves the page and the JSON.
type Status struct {
	cfg Config
	now func() time.Time

	mu   sync.Mutex
	ring []sample // oldest first once full: ring[next:] then ring[:next]
	next int
	full bool
}

// sample is what the history keeps of one reading.
type sample struct {
	at        time.Time
	accepted  uint64
	depth     []uint64 // per sink, in Reading order
	delivered []uint64
}

// New validates cfg and takes the first sample, so rates are defined from
// the start.
func New(cfg Config) (*Status, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.SampleEvery == 0 {
		cfg.SampleEvery = DefaultSampleEvery
	}
	if cfg.History == 0 {
		cfg.History = DefaultHistory
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	s := &Status{cfg: cfg, now: cfg.Now}
	if s.now == nil {
		s.now = time.Now
	}
	if s.cfg.Started.IsZero() {
		s.cfg.Started = s.now()
	}
	s.ring = make([]sample, int(cfg.History/cfg.SampleEvery))
	s.Sample()
	return s, nil
}

// Run samples every SampleEvery until ctx ends.
func (s *Status) Run(ctx context.Context) {
	clock.Every(ctx.Done(), s.cfg.SampleEvery, s.Sample)
}

// Sample reads the components and appends to the history.
func (s *Status) Sample() {
	r := s.cfg.Read()
	smp := sample{at: s.now(), accepted: r.Intake.Accepted}
	for _, sk := range r.Sinks {
		smp.depth = append(smp.depth, sk.Depth)
		smp.delivered = append(smp.delivered, sk.Delivered)
	}
	s.mu.Lock()
	s.ring[s.next] = smp
	s.next++
	if s.next == len(s.ring) {
		s.next, s.full = 0, true
	}
	s.mu.Unlock()
}

// history returns the samples, oldest first.
func (s *Status) history() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]sample, 0, len(s.ring))
	if s.full {
		out = append(out, s.ring[s.next:]...)
	}
	return append(out, s.ring[:s.next]...)
}

// Query narrows the device list of a report.
type Query struct {
	Devices int    // at most this many; DefaultDevices when 0, all when < 0
	Search  string // case-insensitive substring of id, name or project
}

// Report is the JSON of GET /api/status. Field names are stable: new
// fields may be added, none renamed or removed without a new Schema.
type Report struct {
	Schema    int        `json:"schema"` // 1
	Time      time.Time  `json:"time"`
	Gateway   Gateway    `json:"gateway"`
	Listeners []Listener `json:"listeners"`
	Intake    Intake     `json:"intake"`
	Queue     Queue      `json:"queue"`
	Sinks     []Sink     `json:"sinks"`
	Devices   Devices    `json:"devices"`
	History   History    `json:"history"`
}

// Gateway identifies the running gateway.
type Gateway struct {
	ID             string    `json:"id"`
	Version        string    `json:"version"`
	Commit         string    `json:"commit"`
	Started        time.Time `json:"started"`
	UptimeSeconds  float64   `json:"uptime_seconds"`
	RefreshSeconds float64   `json:"refresh_seconds"` // the page's polling interval
}

// Intake is the webhook side.
type Intake struct {
	RatePerSecond   float64           `json:"rate_per_second"` // accepted messages/s over the last minute
	AcceptedTotal   uint64            `json:"accepted_total"`
	DuplicatesTotal uint64            `json:"duplicates_total"`
	FilteredTotal   uint64            `json:"filtered_total"`
	LastRequest     *time.Time        `json:"last_request"` // null before the first
	Refusals        map[string]uint64 `json:"refusals"`     // non-200 replies since start, by code; only codes seen
	RateHistory     []float64         `json:"rate_history"` // accepted messages/s per history interval
}

// Queue is the durable queue.
type Queue struct {
	Messages         uint64  `json:"messages"`
	Bytes            int64   `json:"bytes"`
	MaxBytes         int64   `json:"max_bytes"`
	FileBytes        int64   `json:"file_bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"` // oldest message some sink still waits for; 0 when none
	DeadLetters      uint64  `json:"dead_letters"`
	DroppedTotal     uint64  `json:"dropped_total"`
	ExpiredTotal     uint64  `json:"expired_total"`
	Error            string  `json:"error,omitempty"`
}

// Sink states, from best to worst.
const (
	StateOK      = "ok"      // connected (or connectionless) and keeping up
	StateLagging = "lagging" // delivering, but its oldest message waits over a minute
	StateDown    = "down"    // not connected, or its last attempt failed
)

// Sink is one output.
type Sink struct {
	Name                  string     `json:"name"`
	Type                  string     `json:"type"`
	State                 string     `json:"state"` // ok | lagging | down
	Link                  *Link      `json:"link"`  // null for sinks without a connection
	Depth                 uint64     `json:"depth"`
	OldestAgeSeconds      float64    `json:"oldest_age_seconds"`
	DeliveryRatePerSecond float64    `json:"delivery_rate_per_second"` // over the last minute
	DeliveredTotal        uint64     `json:"delivered_total"`
	FailuresTotal         uint64     `json:"failures_total"`
	DeadLetters           uint64     `json:"dead_letters"` // refused permanently since start
	LastSuccess           *time.Time `json:"last_success"`
	LastError             string     `json:"last_error"`
	LastErrorAt           *time.Time `json:"last_error_at"`
	DepthHistory          []uint64   `json:"depth_history"` // one per history interval
}

// Link is a sink's connection.
type Link struct {
	Connected bool       `json:"connected"`
	Since     *time.Time `json:"since"`
	LastError string     `json:"last_error,omitempty"`
}

// Devices are the last-seen devices.
type Devices struct {
	Tracked int      `json:"tracked"` // devices remembered (bounded by the receiver)
	Matched int      `json:"matched"` // of those, matching the search
	Items   []Device `json:"items"`   // most recent first
}

// Device is one last-seen device.
type Device struct {
	ID         string     `json:"id"`
	Name       string     `json:"name,omitempty"` // when known
	Type       string     `json:"type,omitempty"` // Wittra device type, when known
	Project    string     `json:"project"`
	Kind       string     `json:"kind"`
	LastSeen   time.Time  `json:"last_seen"`
	Messages   uint64     `json:"messages"`
	MeasuredAt *time.Time `json:"measured_at"` // the latest message's own timestamp, when it has one
	Values     []Value    `json:"values"`
	Note       string     `json:"note,omitempty"` // why values are missing or cut
}

// Value is one measured value of the latest message.
type Value struct {
	Path  string `json:"path"`
	Value string `json:"value"`
}

// History describes the series in the report: one point per interval,
// oldest first, the last one ending at End.
type History struct {
	IntervalSeconds float64   `json:"interval_seconds"`
	SpanSeconds     float64   `json:"span_seconds"`
	End             time.Time `json:"end"`
}

// Report reads the components now and builds the report.
func (s *Status) Report(q Query) Report {
	return s.build(s.cfg.Read(), s.now(), s.history(), q)
}

func (s *Status) build(r Reading, now time.Time, hist []sample, q Query) Report {
	rep := Report{
		Schema: 1,
		Time:   now,
		Gateway: Gateway{
			ID: s.cfg.GatewayID, Version: s.cfg.Version, Commit: s.cfg.Commit,
			Started:        s.cfg.Started,
			UptimeSeconds:  now.Sub(s.cfg.Started).Seconds(),
			RefreshSeconds: s.cfg.Refresh.Seconds(),
		},
		Listeners: s.cfg.Listeners,
		History:   History{IntervalSeconds: s.cfg.SampleEvery.Seconds(), SpanSeconds: s.cfg.History.Seconds()},
	}
	if len(hist) > 0 {
		rep.History.End = hist[len(hist)-1].at
	}
	base := rateBase(hist, now)

	in := r.Intake
	rep.Intake = Intake{
		AcceptedTotal: in.Accepted, DuplicatesTotal: in.Duplicates, FilteredTotal: in.Filtered,
		LastRequest: timePtr(in.LastRequest),
		Refusals:    map[string]uint64{},
		RateHistory: []float64{},
	}
	for code, n := range in.Replies {
		if code != 200 && n > 0 {
			rep.Intake.Refusals[strconv.Itoa(code)] = n
		}
	}
	if base != nil {
		rep.Intake.RatePerSecond = rate(in.Accepted, base.accepted, now.Sub(base.at))
	}
	for i := 1; i < len(hist); i++ {
		rep.Intake.RateHistory = append(rep.Intake.RateHistory,
			rate(hist[i].accepted, hist[i-1].accepted, hist[i].at.Sub(hist[i-1].at)))
	}

	qr := r.Queue
	rep.Queue = Queue{
		Messages: qr.Messages, Bytes: qr.Bytes, MaxBytes: qr.MaxBytes, FileBytes: qr.FileBytes,
		DeadLetters: qr.DeadLetters, DroppedTotal: qr.Dropped, ExpiredTotal: qr.Expired,
	}
	if qr.Err != nil {
		rep.Queue.Error = qr.Err.Error()
	}

	rep.Sinks = make([]Sink, 0, len(r.Sinks))
	for i, sr := range r.Sinks {
		sk := Sink{
			Name: sr.Name, Type: sr.Type,
			Depth: sr.Depth, OldestAgeSeconds: age(now, sr.Oldest),
			DeliveredTotal: sr.Delivered, FailuresTotal: sr.Failures, DeadLetters: sr.DeadLetters,
			LastSuccess: timePtr(sr.LastSuccess),
			LastError:   sr.LastError, LastErrorAt: timePtr(sr.LastFailure),
			DepthHistory: []uint64{},
		}
		if sr.Link != nil {
			sk.Link = &Link{Connected: sr.Link.Connected, Since: timePtr(sr.Link.Since), LastError: sr.Link.LastError}
		}
		if base != nil && i < len(base.delivered) {
			sk.DeliveryRatePerSecond = rate(sr.Delivered, base.delivered[i], now.Sub(base.at))
		}
		for _, h := range hist {
			if i < len(h.depth) {
				sk.DepthHistory = append(sk.DepthHistory, h.depth[i])
			}
		}
		sk.State = sinkState(sr, now)
		rep.Queue.OldestAgeSeconds = max(rep.Queue.OldestAgeSeconds, sk.OldestAgeSeconds)
		rep.Sinks = append(rep.Sinks, sk)
	}

	rep.Devices = devices(r.Devices, q)
	return rep
}

// sinkState: down when the connection is down or the last attempt failed
// after the last success; lagging when its oldest message waits over a
// minute; ok otherwise.
func sinkState(sr SinkReading, now time.Time) string {
	switch {
	case sr.Link != nil && !sr.Link.Connected:
		return StateDown
	case sr.Depth > 0 && sr.LastFailure.After(sr.LastSuccess):
		return StateDown
	case sr.Depth > 0 && !sr.Oldest.IsZero() && now.Sub(sr.Oldest) > time.Minute:
		return StateLagging
	}
	return StateOK
}

// rateBase is the oldest sample within the rate window (the newest one
// when none is), from which rates are counted.
func rateBase(hist []sample, now time.Time) *sample {
	if len(hist) == 0 {
		return nil
	}
	for i := range hist {
		if now.Sub(hist[i].at) <= rateWindow {
			return &hist[i]
		}
	}
	return &hist[len(hist)-1]
}

func rate(cur, prev uint64, d time.Duration) float64 {
	if cur < prev {
		return 0
	}
	// A base taken just now would make a burst look enormous.
	d = max(d, time.Second)
	return float64(cur-prev) / d.Seconds()
}

func age(now, t time.Time) float64 {
	if t.IsZero() || t.After(now) {
		return 0
	}
	return now.Sub(t).Seconds()
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func devices(all []DeviceReading, q Query) Devices {
	limit := q.Devices
	if limit == 0 {
		limit = DefaultDevices
	}
	search := strings.ToLower(strings.TrimSpace(q.Search))
	out := Devices{Tracked: len(all), Items: []Device{}}
	for _, d := range all {
		if search != "" && !strings.Contains(strings.ToLower(d.ID), search) &&
			!strings.Contains(strings.ToLower(d.Name), search) &&
			!strings.Contains(strings.ToLower(d.Project), search) {
			continue
		}
		out.Matched++
		if limit > 0 && len(out.Items) >= limit {
			continue
		}
		out.Items = append(out.Items, device(d))
	}
	return out
}

// device reads the latest values of d with the wittra package, the only
// reader of the payload format.
func device(d DeviceReading) Device {
	dv := Device{ID: d.ID, Name: d.Name, Type: d.Type, Project: d.Project, Kind: d.Kind, LastSeen: d.LastSeen, Messages: d.Messages, Values: []Value{}}
	if d.Body == nil {
		if d.BodyLen > 0 {
			dv.Note = fmt.Sprintf("latest message (%d bytes) too large to keep", d.BodyLen)
		}
		return dv
	}
	if ts, ok := wittra.Timestamp(d.Body); ok {
		dv.MeasuredAt = &ts
	}
	vals, err := wittra.ValuesOfValid(d.Body)
	if err != nil {
		dv.Note = "values unreadable: " + err.Error()
		return dv
	}
	for i, v := range vals {
		if i == maxValues {
			dv.Note = fmt.Sprintf("%d more values not shown", len(vals)-maxValues)
			break
		}
		dv.Values = append(dv.Values, Value{Path: v.Path, Value: clip(string(v.Payload), maxValueLen)})
	}
	return dv
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// refusalCodes returns the refusal codes sorted, for stable rendering.
func refusalCodes(m map[string]uint64) []string {
	codes := make([]string, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	return codes
}
