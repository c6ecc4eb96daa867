// Package wittraapi reads device names and types from the Wittra REST API
// (https://api.wittra.se) so that the gateway can show "Freezer 2" where it
// would show D00124B001E2A1B2C. It is optional: without it every sink works
// on device ids alone.
//
// The client asks, for each project, GET /v1/organizations/<org>/projects/
// <project>/devices with Basic auth base64(<org>:<key>), every Refresh. It
// keeps the last good list of each project in a Store (the queue file's KV
// in the gateway), so names survive restarts and API outages, and answers
// Directory lookups from memory only: a slow, failing or throttling API
// never delays delivery. Errors back off (doubling up to Refresh); a 429
// waits as long as its Retry-After asks.
//
// What the package assumes of the API beyond public documents is listed in
// wittrafake's package doc.
package wittraapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/clock"
	"wittra-gateway/internal/field"
	"wittra-gateway/sinks"
	"wittra-gateway/wittra"
)

// Defaults and bounds.
const (
	DefaultURL     = "https://api.wittra.se"
	DefaultRefresh = time.Hour
	DefaultTimeout = 30 * time.Second
	// MinBackoff is the first wait after a failed round (or Refresh when
	// shorter); it doubles up to Refresh.
	MinBackoff = time.Minute
	// MaxRetryAfter caps how long a 429's Retry-After is honoured.
	MaxRetryAfter = 24 * time.Hour
	// MaxProjects bounds the projects asked about (the configured ones, or
	// those seen in webhooks).
	MaxProjects = 20
	// DefaultNewProjectPoll is how often Run looks for projects seen in
	// webhooks that were never asked about, between full rounds.
	DefaultNewProjectPoll = time.Minute
	// keyPrefix names a project's list in the Store.
	keyPrefix = "project/"
)

// Store is durable storage for the last good lists (satisfied by
// *buffer.KV).
type Store interface {
	Get(key string) ([]byte, error)
	Put(ctx context.Context, key string, value []byte) error
	Keys() ([]string, error)
}

// Config configures a Client.
type Config struct {
	URL            string // DefaultURL when empty; http:// only for tests
	OrganizationID string // required
	APIKey         string // required; a secret, never logged
	// Projects are the Wittra project ids to ask about. When empty, the
	// projects SeenProjects returns are asked about.
	Projects []string
	// SeenProjects returns the project ids seen in webhooks (as Wittra
	// spells them); nil means none.
	SeenProjects func() []string
	Refresh      time.Duration // DefaultRefresh when 0
	Timeout      time.Duration // one request; DefaultTimeout when 0
	Store        Store         // nil: lists are kept in memory only
	Clock        clock.Clock   // clock.System() when nil
	HTTPClient   *http.Client  // a plain client when nil
	UserAgent    string        // "wittra-gateway" when empty
	// NewProjectPoll: how often Run looks for newly seen projects between
	// rounds; DefaultNewProjectPoll when 0.
	NewProjectPoll time.Duration
}

// Validate reports every problem of c, zero durations and an empty URL
// standing for their defaults. Each is a *field.Error naming the key under
// the config file's wittra_api section.
func (c *Config) Validate() error {
	var errs field.List
	if c.URL != "" {
		if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			errs.Add("url", "must start with https:// (http:// only for a local test server) and name a host, without credentials")
		}
	}
	switch {
	case c.OrganizationID == "":
		errs.Add("organization_id", "required (the organization id shown in the Wittra portal)")
	case strings.ContainsAny(c.OrganizationID, "/:?# "):
		errs.Add("organization_id", "must not contain / : ? # or spaces")
	}
	if c.APIKey == "" {
		errs.Add("api_key", "required (api_key_file, or api_key): a key made under \"Manage API Keys\" in the Wittra portal")
	}
	if c.Refresh < 0 {
		errs.Add("refresh", "must not be negative")
	}
	if c.Timeout < 0 {
		errs.Add("", "timeout must not be negative")
	}
	if len(c.Projects) > MaxProjects {
		errs.Add("projects", "at most %d projects", MaxProjects)
	}
	for i, p := range c.Projects {
		if p == "" || strings.ContainsAny(p, "/?# ") {
			errs.Add(fmt.Sprintf("projects[%d]", i), "must be a Wittra project id (no / ? # or spaces)")
		}
	}
	return errs.Err()
}

// Stats is what the client reports for metrics.
type Stats struct {
	LastSuccess time.Time // last list fetched and parsed; zero before the first
	Devices     int       // devices known (all projects)
	Errors      uint64    // failed requests since start
}

// Client keeps the device lists up to date. Device, Changed and Stats may
// be called from any goroutine.
type Client struct {
	cfg  Config
	log  zerolog.Logger
	auth string

	snap    atomic.Pointer[Snapshot]
	errors  atomic.Uint64
	lastOK  atomic.Int64 // unix ns
	backoff atomic.Int64 // current back-off (ns); 0 while the API answers

	mu       sync.Mutex
	lists    map[string]list // by project id as Wittra spells it
	asked    map[string]bool // projects asked about since start
	lastErr  map[string]string
	changed  chan struct{}
	inflight sync.Mutex // one round at a time
}

// list is one project's last good device list.
type list struct {
	Fetched time.Time `json:"fetched"`
	Devices []Device  `json:"devices"`
}

var _ sinks.Directory = (*Client)(nil)

// New builds a client and loads the lists kept in cfg.Store. It does not
// touch the network: Run does.
func New(cfg Config, log zerolog.Logger) (*Client, error) {
	if cfg.URL == "" {
		cfg.URL = DefaultURL
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "wittra-gateway"
	}
	if cfg.NewProjectPoll <= 0 {
		cfg.NewProjectPoll = DefaultNewProjectPoll
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("wittra api: %w", err)
	}
	c := &Client{
		cfg:     cfg,
		log:     log.With().Str("component", "wittra_api").Logger(),
		auth:    "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.OrganizationID+":"+cfg.APIKey)),
		lists:   map[string]list{},
		asked:   map[string]bool{},
		lastErr: map[string]string{},
		changed: make(chan struct{}),
	}
	if cfg.Store != nil {
		lists, err := loadLists(cfg.Store)
		if err != nil {
			return nil, fmt.Errorf("wittra api: read the kept device lists: %w", err)
		}
		c.lists = lists
	}
	c.snap.Store(newSnapshot(c.lists))
	return c, nil
}

// Device answers from memory what the API last said of a device; project
// and device are topic-safe ids as in sinks.Message.
func (c *Client) Device(project, device string) (sinks.DeviceInfo, bool) {
	return c.snap.Load().Device(project, device)
}

// Changed returns a channel that is closed at the next change of any
// answer of Device (see sinks.DirectoryNotifier).
func (c *Client) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Stats returns the figures for metrics.
func (c *Client) Stats() Stats {
	st := Stats{Devices: c.snap.Load().Len(), Errors: c.errors.Load()}
	if ns := c.lastOK.Load(); ns != 0 {
		st.LastSuccess = time.Unix(0, ns)
	}
	return st
}

// Run refreshes until ctx ends: at once, then every Refresh (sooner after
// an error, with back-off; later when a 429 asks). Projects seen in webhooks
// for the first time are asked about within a minute.
func (c *Client) Run(ctx context.Context) {
	wait := c.Refresh(ctx)
	due := c.cfg.Clock.Mono() + wait
	for {
		t := time.NewTimer(min(max(due-c.cfg.Clock.Mono(), 0), c.cfg.NewProjectPoll))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if c.cfg.Clock.Mono() >= due {
			due = c.cfg.Clock.Mono() + c.Refresh(ctx)
			continue
		}
		if c.backoff.Load() == 0 { // not while the API is failing
			if w, asked := c.refresh(ctx, true); asked && w != c.cfg.Refresh {
				due = min(due, c.cfg.Clock.Mono()+w)
			}
		}
	}
}

// Refresh asks about every project once and returns how long to wait
// before the next round: Refresh after a good round, the back-off after a
// failed one, the Retry-After of a 429.
func (c *Client) Refresh(ctx context.Context) time.Duration {
	w, _ := c.refresh(ctx, false)
	return w
}

// outcome of one request.
type outcome int

const (
	ok        outcome = iota
	failed            // this project's answer was bad (401, 404, unparsable...)
	down              // the API itself failed (network, timeout, 5xx): stop the round
	throttled         // 429: stop the round, wait as asked
)

// refresh runs one round; onlyNew limits it to projects never asked about
// that have no kept list. asked is false when there was nothing to ask.
func (c *Client) refresh(ctx context.Context, onlyNew bool) (wait time.Duration, asked bool) {
	c.inflight.Lock()
	defer c.inflight.Unlock()
	projects := c.projects(onlyNew)
	if len(projects) == 0 {
		return c.cfg.Refresh, false
	}
	var retryAfter time.Duration
	bad := false
	for _, p := range projects {
		if ctx.Err() != nil {
			return c.cfg.Refresh, true
		}
		res, ra := c.fetch(ctx, p)
		if res == ok {
			continue
		}
		bad = true
		if res == throttled {
			retryAfter = ra
		}
		if res == down || res == throttled {
			break
		}
	}
	if !bad {
		c.backoff.Store(0)
		return c.cfg.Refresh, true
	}
	b := time.Duration(c.backoff.Load())
	if b == 0 {
		b = min(MinBackoff, c.cfg.Refresh)
	} else {
		b = min(2*b, c.cfg.Refresh)
	}
	c.backoff.Store(int64(b))
	if retryAfter > 0 {
		return retryAfter, true
	}
	return b, true
}

// projects lists what to ask about: the configured projects, else those
// seen in webhooks (bounded by MaxProjects).
func (c *Client) projects(onlyNew bool) []string {
	ps := c.cfg.Projects
	if len(ps) == 0 && c.cfg.SeenProjects != nil {
		ps = c.cfg.SeenProjects()
	}
	ps = slices.Clone(ps)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	c.mu.Lock()
	defer c.mu.Unlock()
	out := ps[:0]
	for _, p := range ps {
		if p == "" || strings.ContainsAny(p, "/?#") {
			continue
		}
		if onlyNew {
			if _, kept := c.lists[p]; kept || c.asked[p] {
				continue
			}
		}
		out = append(out, p)
	}
	if len(out) > MaxProjects {
		c.log.Warn().Int("projects", len(out)).Int("max", MaxProjects).Msg("more projects than the client asks about; the rest keep their ids only")
		out = out[:MaxProjects]
	}
	return out
}

// fetch asks for one project's devices and applies a good answer.
func (c *Client) fetch(ctx context.Context, project string) (outcome, time.Duration) {
	c.mu.Lock()
	c.asked[project] = true
	c.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	path := "/v1/organizations/" + url.PathEscape(c.cfg.OrganizationID) + "/projects/" + url.PathEscape(project) + "/devices"
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, c.cfg.URL+path, nil)
	if err != nil {
		return c.fail(project, failed, fmt.Errorf("build request: %w", err)), 0
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		if ctx.Err() != nil { // stopping: not the API's fault
			return down, 0
		}
		// Never the URL in the error text twice; it holds no secret.
		return c.fail(project, down, fmt.Errorf("request: %w", err)), 0
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	switch {
	case err != nil:
		return c.fail(project, down, fmt.Errorf("read answer: %w", err)), 0
	case resp.StatusCode == http.StatusTooManyRequests:
		ra := retryAfter(resp.Header.Get("Retry-After"), c.cfg.Clock.Now())
		return c.fail(project, throttled, fmt.Errorf("429 Too Many Requests (retry after %v)", ra)), ra
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return c.fail(project, failed, fmt.Errorf("%s: check wittra_api.organization_id and the API key", resp.Status)), 0
	case resp.StatusCode == http.StatusNotFound:
		return c.fail(project, failed, fmt.Errorf("%s: no such organization or project", resp.Status)), 0
	case resp.StatusCode >= 500:
		return c.fail(project, down, fmt.Errorf("%s", resp.Status)), 0
	case resp.StatusCode != http.StatusOK:
		return c.fail(project, failed, fmt.Errorf("unexpected %s", resp.Status)), 0
	case len(body) > MaxBody:
		return c.fail(project, failed, fmt.Errorf("answer over %d bytes", MaxBody)), 0
	}
	devs, skipped, err := parseDevices(body)
	if err != nil {
		return c.fail(project, failed, err), 0
	}
	if skipped > 0 {
		c.log.Debug().Str("project", project).Int("skipped", skipped).Msg("device list elements without a usable deviceId skipped")
	}
	c.apply(ctx, project, devs)
	return ok, 0
}

// fail counts and logs a failed request: a new reason at warn, a repeated
// one at debug, so an outage of hours gives one line per project.
func (c *Client) fail(project string, res outcome, err error) outcome {
	c.errors.Add(1)
	c.mu.Lock()
	repeated := c.lastErr[project] == err.Error()
	c.lastErr[project] = err.Error()
	c.mu.Unlock()
	ev := c.log.Warn()
	if repeated {
		ev = c.log.Debug()
	}
	ev.Err(err).Str("project", project).Msg("device list refresh failed; names stay as last known")
	return res
}

// apply takes a good list: it replaces the project's list in memory and in
// the Store when it changed.
func (c *Client) apply(ctx context.Context, project string, devs []Device) {
	now := c.cfg.Clock.Now()
	c.lastOK.Store(now.UnixNano())
	c.mu.Lock()
	old, had := c.lists[project]
	if c.lastErr[project] != "" {
		c.log.Info().Str("project", project).Msg("device list refresh works again")
		delete(c.lastErr, project)
	}
	same := had && slices.Equal(old.Devices, devs)
	l := list{Fetched: now, Devices: devs}
	c.lists[project] = l
	var snap *Snapshot
	if !same {
		snap = newSnapshot(c.lists)
	}
	c.mu.Unlock()
	if same {
		return
	}
	c.snap.Store(snap)
	c.log.Info().Str("project", project).Int("devices", len(devs)).Msg("device list updated")
	if c.cfg.Store != nil {
		b, _ := json.Marshal(l)
		if err := c.cfg.Store.Put(ctx, keyPrefix+project, b); err != nil {
			c.log.Warn().Err(err).Str("project", project).Msg("cannot keep the device list on disk; it is used from memory")
		}
	}
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// retryAfter reads a Retry-After value: seconds or an HTTP date. Without a
// usable value it is MinBackoff; it is capped at MaxRetryAfter.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	d := MinBackoff
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, time.Second), MaxRetryAfter)
}

// loadLists reads every kept list from st; an unreadable entry is skipped
// (the next refresh rewrites it).
func loadLists(st Store) (map[string]list, error) {
	keys, err := st.Keys()
	if err != nil {
		return nil, err
	}
	out := map[string]list{}
	for _, k := range keys {
		p, isList := strings.CutPrefix(k, keyPrefix)
		if !isList {
			continue
		}
		b, err := st.Get(k)
		if err != nil {
			return nil, err
		}
		var l list
		if len(b) == 0 || json.Unmarshal(b, &l) != nil {
			continue
		}
		out[p] = l
	}
	return out, nil
}

// Snapshot is an immutable set of answers: what the Client serves, and what
// Load reads from a Store offline (the devices command).
type Snapshot struct {
	m map[devKey]sinks.DeviceInfo
}

type devKey struct{ project, device string }

// newSnapshot indexes lists by topic-safe project and device id, the form
// sinks see.
func newSnapshot(lists map[string]list) *Snapshot {
	s := &Snapshot{m: map[devKey]sinks.DeviceInfo{}}
	for p, l := range lists {
		tp, err := wittra.TopicID(p)
		if err != nil {
			continue
		}
		for _, d := range l.Devices {
			td, err := wittra.TopicID(d.ID)
			if err != nil {
				continue
			}
			s.m[devKey{tp, td}] = sinks.DeviceInfo{Name: d.Name, Type: d.Type}
		}
	}
	return s
}

// Device answers for a topic-safe project and device id.
func (s *Snapshot) Device(project, device string) (sinks.DeviceInfo, bool) {
	if s == nil {
		return sinks.DeviceInfo{}, false
	}
	d, ok := s.m[devKey{project, device}]
	return d, ok
}

// Len is the number of devices known.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return len(s.m)
}

// Load reads the lists kept in st (no network), for offline use.
func Load(st Store) (*Snapshot, error) {
	lists, err := loadLists(st)
	if err != nil {
		return nil, err
	}
	return newSnapshot(lists), nil
}
