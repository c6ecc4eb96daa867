package main

// YAML configuration of the gateway (docs/contract.md#configuration).
//
// API used by the rest of cmd/gateway:
//
//	DefaultConfig() *Config                               static defaults (what an empty file gives)
//	ParseConfig(data []byte, dir string) (*Config, error) decode + defaults + secrets + validation
//	LoadConfig(path string) (*Config, error)              os.ReadFile ("read config: %w") + ParseConfig
//	(*Config).Validate() error                            re-run validation (no line numbers)
//	(*Config).Redacted() *Config                          deep copy with tokens/passwords masked, for logging
//
// Every error about the content of the file is a ConfigErrors ([]*ConfigError{Line, Field, Err}),
// one entry per problem, each formatted "line N: field: message". Secret values never appear
// in them.
//
// Every field of Config is a plain, fully resolved Go value, so no accessor is needed:
//   - strings have ${NAME} / ${NAME:-default} expanded;
//   - durations are time.Duration, sizes (max_body, max_bytes) are int64 bytes;
//   - secrets (Route.Token, UserConfig.Password, SinkConfig.Password) hold the value, already
//     read from their *_file when one was given;
//   - Gateway.ID is set (host name by default, sanitised to be topic-safe);
//   - Log.Level is never empty (debug|info|warn|error), Log.Format is json|console|journald;
//   - Admin.Listen == "" means the admin server is off (explicit `listen: ""`);
//   - Broker.AllowAnonymous is resolved (default: true without users, false with users);
//   - UserConfig.Subscribe is never nil (default ["#"]; an explicit [] reads nothing) and
//     UserConfig.PublishTopics is ["#"] by default when Publish is set (nil otherwise);
//     UserConfig.Password may be a bcrypt hash ($2a$/$2b$/$2y$), checked to be well formed;
//   - Webhook.Routes has at least one route; Route.Token == "" means no authentication;
//   - per-sink defaults are filled: TopicPrefix, QoS (1), ClientID ("wittra-<id>", type mqtt),
//     Mode ("mqtt", type cumulocity), DeviceName ("Wittra gateway <id>", type cumulocity).

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"wittra-gateway/bridge"
	"wittra-gateway/internal/status"
	"wittra-gateway/sinks/broker"
)

// Config is the whole configuration of the gateway.
type Config struct {
	Gateway GatewayConfig
	Log     LogConfig
	Webhook WebhookConfig
	Buffer  BufferConfig
	Admin   AdminConfig
	Broker  BrokerConfig
	Sinks   []SinkConfig
	// WittraAPI is where device names come from (config_wittraapi.go);
	// nil when the section is absent.
	WittraAPI *WittraAPIConfig
}

// GatewayConfig is the `gateway:` section.
type GatewayConfig struct {
	ID string // never empty; names the gateway in status topics and Cumulocity
}

// LogConfig is the `log:` section.
type LogConfig struct {
	Level  string // debug | info | warn | error (never empty)
	Format string // json | console | journald
}

// WebhookConfig is the `webhook:` section.
type WebhookConfig struct {
	Listen  string // host:port
	TLS     WebhookTLS
	MaxBody int64 // bytes, > 0
	Routes  []RouteConfig
}

// WebhookTLS enables HTTPS when both files are set, or when ACME is.
type WebhookTLS struct {
	CertFile string
	KeyFile  string
	ACME     *WebhookACME // nil: no ACME (the key is absent)
}

// WebhookACME is `webhook.tls.acme:`: certificates from an ACME CA.
type WebhookACME struct {
	Domains      []string
	Email        string
	CacheDir     string // default: "acme" beside buffer.path
	DirectoryURL string // default: Let's Encrypt production
	CAFile       string // extra roots for directory_url (a private CA); optional
	HTTPListen   string // host:port for http-01; "" means tls-alpn-01 only
}

// RouteConfig is one webhook route (one Wittra project integration).
type RouteConfig struct {
	Path           string   // starts with "/"
	Token          string   // secret; "" means no authentication
	Project        string   // project used when the body has no projectId
	DevicePrefixes []string // empty means every device is accepted
}

// BufferConfig is the `buffer:` section (the bbolt queue).
type BufferConfig struct {
	Path        string
	MaxBytes    int64         // bytes, > 0
	MaxAge      time.Duration // > 0
	WhenFull    string        // reject | drop_oldest
	DedupWindow time.Duration // >= 0; 0 disables deduplication
}

// AdminConfig is the `admin:` section.
type AdminConfig struct {
	Listen string // host:port; "" means off
	// Users, when set, turn on HTTP basic auth for the admin listener
	// (status page, /api/status, /metrics; /healthz and /readyz stay open).
	Users []AdminUser
}

// AdminUser is one user of the admin listener.
type AdminUser struct {
	Username     string
	PasswordHash string // bcrypt, checked to be well formed
}

// BrokerConfig is the `broker:` section (the embedded MQTT broker).
type BrokerConfig struct {
	Enabled        bool
	Listeners      []ListenerConfig
	AllowAnonymous bool // resolved: explicit value, else true without users and false with users
	Users          []UserConfig
}

// ListenerConfig is one listener of the embedded broker.
type ListenerConfig struct {
	Type           string   // tcp | tls | websocket
	Address        string   // host:port
	CertFile       string   // required for tls; optional for websocket (wss)
	KeyFile        string   // required for tls; optional for websocket (wss)
	ClientCAFile   string   // tls / wss: require client certificates signed by these CAs
	AllowedOrigins []string // websocket: accepted browser Origins (scheme://host[:port]); empty = same origin
}

// UserConfig is one user of the embedded broker.
type UserConfig struct {
	Username      string
	Password      string   // secret; plain text or a bcrypt hash
	Subscribe     []string // topic filters the user may read; never nil after parsing
	Publish       bool
	PublishTopics []string // topic filters the user may publish to (only with Publish)
}

// SinkConfig is one output of the gateway.
type SinkConfig struct {
	Name        string // unique, [A-Za-z0-9_-]+
	Type        string // broker | mqtt | cumulocity | jetstream
	TopicPrefix string
	Values      bool
	Retain      bool
	URL         string
	ClientID    string
	Username    string
	Password    string // secret
	TLS         SinkTLS
	QoS         int    // 0..2
	Mode        string // cumulocity: mqtt | rest
	Tenant      string // cumulocity
	DeviceName  string // cumulocity
	TokenURL    string // cumulocity, mode rest with certificate login

	JetStream JetStreamSinkConfig // type jetstream (config_jetstream.go)
	// Retained-topic bounds of a broker sink; 0 = the broker package default.
	RetainMaxAge    time.Duration // retain_max_age: clear a device silent this long
	RetainMaxTopics int           // retain_max_topics: cap, oldest-heard-of devices evicted first
	RetainMaxBytes  int64         // retain_max_bytes: cap on retained payload bytes

	DeviceTopics DeviceTopicsSinkConfig // state, homeassistant (config_devicetopics.go)
	// Backlog: in_order or live_first; "" is in_order. Every sink type
	// (bridge.ParseBacklog, docs/live-first.md).
	Backlog string
}

// SinkTLS is the client TLS setup of an mqtt or cumulocity sink.
type SinkTLS struct {
	CAFile             string
	CertFile           string
	KeyFile            string
	InsecureSkipVerify bool
}

// Default values (docs/contract.md#configuration).
const (
	DefaultLogLevel       = "info"
	DefaultLogFormat      = "json"
	DefaultWebhookListen  = "127.0.0.1:8080"
	DefaultMaxBody        = 1 << 20 // 1MiB
	DefaultRoutePath      = "/wittra"
	DefaultBufferPath     = "./data/queue.db"
	DefaultMaxBytes       = 1 << 30 // 1GiB
	DefaultMaxAge         = 168 * time.Hour
	DefaultWhenFull       = "reject"
	DefaultDedupWindow    = 24 * time.Hour
	DefaultAdminListen    = "127.0.0.1:9310"
	DefaultBrokerListener = "127.0.0.1:1883"
	DefaultTopicPrefix    = "wittra"
	DefaultQoS            = 1
	DefaultCumulocityMode = "mqtt"
)

// DefaultConfig returns the configuration an empty file gives.
func DefaultConfig() *Config {
	id := defaultGatewayID()
	return &Config{
		Gateway: GatewayConfig{ID: id},
		Log:     LogConfig{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Webhook: WebhookConfig{
			Listen:  DefaultWebhookListen,
			MaxBody: DefaultMaxBody,
			Routes:  []RouteConfig{{Path: DefaultRoutePath}},
		},
		Buffer: BufferConfig{
			Path:        DefaultBufferPath,
			MaxBytes:    DefaultMaxBytes,
			MaxAge:      DefaultMaxAge,
			WhenFull:    DefaultWhenFull,
			DedupWindow: DefaultDedupWindow,
		},
		Admin: AdminConfig{Listen: DefaultAdminListen},
		Broker: BrokerConfig{
			Enabled:        true,
			Listeners:      []ListenerConfig{{Type: "tcp", Address: DefaultBrokerListener}},
			AllowAnonymous: true,
		},
		Sinks: []SinkConfig{defaultLocalSink()},
	}
}

func defaultLocalSink() SinkConfig {
	return SinkConfig{
		Name:        "local",
		Type:        "broker",
		TopicPrefix: DefaultTopicPrefix,
		Values:      true,
		Retain:      true,
		QoS:         DefaultQoS,
	}
}

// defaultGatewayID is the host name, made topic-safe.
func defaultGatewayID() string {
	h, err := os.Hostname()
	if err != nil {
		h = ""
	}
	if id := sanitizeID(h); id != "" {
		return id
	}
	return "wittra-gateway"
}

// sanitizeID keeps [A-Za-z0-9._-] and replaces anything else by '-'.
func sanitizeID(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-.")
}

// ConfigError is one problem in the configuration.
type ConfigError struct {
	Line  int    // 1-based line in the file; 0 when unknown
	Field string // key path such as "sinks[1].url"; may be empty
	Err   error
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("invalid")
	}
	return b.String()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// ConfigErrors is every problem found in a configuration, sorted by line
// (problems without a line last).
type ConfigErrors []*ConfigError

func (es ConfigErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.Is / errors.As look at each problem.
func (es ConfigErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// LoadConfig reads and parses the configuration file at path. Relative *_file
// paths are relative to the directory of path.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(data, filepath.Dir(path))
}

// ParseConfig decodes data strictly, applies defaults, expands ${NAME} in string
// values, reads *_file secrets (relative paths against dir) and validates the
// result. Any problem gives a ConfigErrors listing all of them.
func ParseConfig(data []byte, dir string) (*Config, error) {
	return parseConfig(newParser(dir), data)
}

// LoadQueueConfig reads the config for the offline `queue` commands: they
// need the buffer section and the sink names, not the secrets. Unset
// ${NAME} variables and *_file secrets are not resolved (under systemd the
// service's environment and credentials are not the shell's), and only
// problems that concern the queue are reported.
func LoadQueueConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	p := newParser(filepath.Dir(path))
	p.offline = true
	cfg, err := parseConfig(p, data)
	var errs ConfigErrors
	if !errors.As(err, &errs) || p.structural {
		return cfg, err
	}
	var kept ConfigErrors
	for _, e := range errs {
		if strings.HasPrefix(e.Field, "buffer") || (strings.HasPrefix(e.Field, "sinks[") && strings.HasSuffix(e.Field, ".name")) {
			kept = append(kept, e)
		}
	}
	if len(kept) > 0 {
		return nil, kept
	}
	return p.cfg, nil
}

func parseConfig(p *parser, data []byte) (*Config, error) {
	cfg := DefaultConfig()
	p.cfg = cfg

	root, err := p.parseTree(data)
	if err != nil {
		p.structural = true
		return nil, err
	}
	if root != nil {
		var raw rawConfig
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
			// raw is partly filled: discard it.
			p.structural = true
			return nil, p.decodeErrors(err)
		}
		p.apply(&raw, cfg)
	}
	p.validate(cfg)
	if len(p.errs) > 0 {
		return nil, p.sorted()
	}
	return cfg, nil
}

// Validate checks c as ParseConfig does, without line numbers.
func (c *Config) Validate() error {
	p := newParser("")
	p.validate(c)
	if len(p.errs) > 0 {
		return p.sorted()
	}
	return nil
}

// Redacted returns a deep copy of c with every secret replaced by "REDACTED",
// safe to log.
func (c *Config) Redacted() *Config {
	const mask = "REDACTED"
	r := *c
	r.Webhook.Routes = make([]RouteConfig, len(c.Webhook.Routes))
	for i, rt := range c.Webhook.Routes {
		rt.DevicePrefixes = append([]string(nil), rt.DevicePrefixes...)
		if rt.Token != "" {
			rt.Token = mask
		}
		r.Webhook.Routes[i] = rt
	}
	r.Broker.Listeners = make([]ListenerConfig, len(c.Broker.Listeners))
	for i, l := range c.Broker.Listeners {
		l.AllowedOrigins = cloneStrings(l.AllowedOrigins)
		r.Broker.Listeners[i] = l
	}
	r.Broker.Users = make([]UserConfig, len(c.Broker.Users))
	for i, u := range c.Broker.Users {
		if u.Password != "" {
			u.Password = mask
		}
		u.Subscribe = cloneStrings(u.Subscribe)
		u.PublishTopics = cloneStrings(u.PublishTopics)
		r.Broker.Users[i] = u
	}
	r.Admin.Users = make([]AdminUser, len(c.Admin.Users))
	for i, u := range c.Admin.Users {
		if u.PasswordHash != "" {
			u.PasswordHash = mask
		}
		r.Admin.Users[i] = u
	}
	r.Sinks = make([]SinkConfig, len(c.Sinks))
	for i, s := range c.Sinks {
		if s.Password != "" {
			s.Password = mask
		}
		if s.JetStream.Token != "" {
			s.JetStream.Token = mask
		}
		r.Sinks[i] = s
	}
	if c.WittraAPI != nil {
		w := *c.WittraAPI
		w.Projects = cloneStrings(w.Projects)
		if w.APIKey != "" {
			w.APIKey = mask
		}
		r.WittraAPI = &w
	}
	return &r
}

// cloneStrings copies s, keeping nil and empty apart.
func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append(make([]string, 0, len(s)), s...)
}

// ---------------------------------------------------------------------------
// File shape. Every scalar is kept as a yaml.Node so that its line, its null-ness
// and its presence are known; conversion to Config happens in (*parser).apply.
// KnownFields(true) still rejects unknown keys at every level.

type rawConfig struct {
	Gateway rawGateway `yaml:"gateway"`
	Log     rawLog     `yaml:"log"`
	Webhook rawWebhook `yaml:"webhook"`
	Buffer  rawBuffer  `yaml:"buffer"`
	Admin   rawAdmin   `yaml:"admin"`
	Broker  rawBroker  `yaml:"broker"`
	Sinks   []rawSink  `yaml:"sinks"`
	// config_wittraapi.go
	WittraAPI *rawWittraAPI `yaml:"wittra_api"`
}

type rawGateway struct {
	ID yaml.Node `yaml:"id"`
}

type rawLog struct {
	Level  yaml.Node `yaml:"level"`
	Format yaml.Node `yaml:"format"`
}

type rawWebhook struct {
	Listen  yaml.Node     `yaml:"listen"`
	TLS     rawWebhookTLS `yaml:"tls"`
	MaxBody yaml.Node     `yaml:"max_body"`
	Routes  []rawRoute    `yaml:"routes"`
}

type rawWebhookTLS struct {
	CertFile yaml.Node `yaml:"cert_file"`
	KeyFile  yaml.Node `yaml:"key_file"`
	ACME     *rawACME  `yaml:"acme"`
}

type rawACME struct {
	Domains      []yaml.Node `yaml:"domains"`
	Email        yaml.Node   `yaml:"email"`
	CacheDir     yaml.Node   `yaml:"cache_dir"`
	DirectoryURL yaml.Node   `yaml:"directory_url"`
	CAFile       yaml.Node   `yaml:"ca_file"`
	HTTPListen   yaml.Node   `yaml:"http_listen"`
}

type rawRoute struct {
	Path           yaml.Node   `yaml:"path"`
	Token          yaml.Node   `yaml:"token"`
	TokenFile      yaml.Node   `yaml:"token_file"`
	Project        yaml.Node   `yaml:"project"`
	DevicePrefixes []yaml.Node `yaml:"device_prefixes"`
}

type rawBuffer struct {
	Path        yaml.Node `yaml:"path"`
	MaxBytes    yaml.Node `yaml:"max_bytes"`
	MaxAge      yaml.Node `yaml:"max_age"`
	WhenFull    yaml.Node `yaml:"when_full"`
	DedupWindow yaml.Node `yaml:"dedup_window"`
}

type rawAdmin struct {
	Listen yaml.Node      `yaml:"listen"`
	Users  []rawAdminUser `yaml:"users"`
}

type rawAdminUser struct {
	Username     yaml.Node `yaml:"username"`
	Password     yaml.Node `yaml:"password"` // a bcrypt hash, not the password
	PasswordFile yaml.Node `yaml:"password_file"`
}

type rawBroker struct {
	Enabled        yaml.Node     `yaml:"enabled"`
	Listeners      []rawListener `yaml:"listeners"`
	AllowAnonymous yaml.Node     `yaml:"allow_anonymous"`
	Users          []rawUser     `yaml:"users"`
}

type rawListener struct {
	Type           yaml.Node   `yaml:"type"`
	Address        yaml.Node   `yaml:"address"`
	CertFile       yaml.Node   `yaml:"cert_file"`
	KeyFile        yaml.Node   `yaml:"key_file"`
	ClientCAFile   yaml.Node   `yaml:"client_ca_file"`
	AllowedOrigins []yaml.Node `yaml:"allowed_origins"`
}

type rawUser struct {
	Username      yaml.Node   `yaml:"username"`
	Password      yaml.Node   `yaml:"password"`
	PasswordFile  yaml.Node   `yaml:"password_file"`
	Subscribe     []yaml.Node `yaml:"subscribe"`
	Publish       yaml.Node   `yaml:"publish"`
	PublishTopics []yaml.Node `yaml:"publish_topics"`
}

type rawSink struct {
	Name         yaml.Node  `yaml:"name"`
	Type         yaml.Node  `yaml:"type"`
	TopicPrefix  yaml.Node  `yaml:"topic_prefix"`
	Values       yaml.Node  `yaml:"values"`
	Retain       yaml.Node  `yaml:"retain"`
	URL          yaml.Node  `yaml:"url"`
	ClientID     yaml.Node  `yaml:"client_id"`
	Username     yaml.Node  `yaml:"username"`
	Password     yaml.Node  `yaml:"password"`
	PasswordFile yaml.Node  `yaml:"password_file"`
	TLS          rawSinkTLS `yaml:"tls"`
	QoS          yaml.Node  `yaml:"qos"`
	Mode         yaml.Node  `yaml:"mode"`
	Tenant       yaml.Node  `yaml:"tenant"`
	DeviceName   yaml.Node  `yaml:"device_name"`
	TokenURL     yaml.Node  `yaml:"token_url"`
	rawJetStream `yaml:",inline"`

	RetainMaxAge    yaml.Node `yaml:"retain_max_age"`
	RetainMaxTopics yaml.Node `yaml:"retain_max_topics"`
	RetainMaxBytes  yaml.Node `yaml:"retain_max_bytes"`

	rawDeviceTopics `yaml:",inline"`
	Backlog         yaml.Node `yaml:"backlog"`
}

type rawSinkTLS struct {
	CAFile             yaml.Node `yaml:"ca_file"`
	CertFile           yaml.Node `yaml:"cert_file"`
	KeyFile            yaml.Node `yaml:"key_file"`
	InsecureSkipVerify yaml.Node `yaml:"insecure_skip_verify"`
}

// ---------------------------------------------------------------------------
// parser: line index, conversion, error collection.

type keyEntry struct {
	path    string
	key     string
	keyLine int
	valLine int
}

type parser struct {
	dir     string
	lines   map[string]int // key path -> line of its first occurrence
	entries []keyEntry     // every key and sequence item, in document order
	bad     map[string]bool
	errs    ConfigErrors
	// offline: leave unset ${NAME} empty and *_file secrets unread (the
	// queue commands need neither).
	offline    bool
	structural bool    // the YAML did not decode: nothing else was checked
	cfg        *Config // what was applied, even when errors were found
}

func newParser(dir string) *parser {
	return &parser{dir: dir, lines: map[string]int{}, bad: map[string]bool{}}
}

// lineOf gives the line of path, else of its closest parent present in the file, else 0.
func (p *parser) lineOf(path string) int {
	for path != "" {
		if l, ok := p.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

func (p *parser) add(line int, field string, err error) {
	p.errs = append(p.errs, &ConfigError{Line: line, Field: field, Err: err})
}

// fail records a conversion problem of field (which is then not validated again).
func (p *parser) fail(field string, format string, args ...any) {
	p.bad[field] = true
	p.add(p.lineOf(field), field, fmt.Errorf(format, args...))
}

// invalid records a validation problem unless field already failed to convert.
func (p *parser) invalid(field string, format string, args ...any) {
	if p.bad[field] {
		return
	}
	p.add(p.lineOf(field), field, fmt.Errorf(format, args...))
}

func (p *parser) sorted() ConfigErrors {
	out := append(ConfigErrors(nil), p.errs...)
	sort.SliceStable(out, func(i, j int) bool {
		li, lj := out[i].Line, out[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
	return out
}

var reYAMLLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// parseTree parses data into a node tree to index key lines. It returns nil,nil
// for an empty document.
func (p *parser) parseTree(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, p.decodeErrors(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, p.decodeErrors(err)
	default:
		p.add(extra.Line, "", errors.New("only one YAML document is allowed"))
		return nil, p.sorted()
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 0 {
		return nil, nil
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, nil
	}
	p.index(root, "")
	return root, nil
}

func (p *parser) index(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			kp := k.Value
			if path != "" {
				kp = path + "." + k.Value
			}
			p.entries = append(p.entries, keyEntry{path: kp, key: k.Value, keyLine: k.Line, valLine: v.Line})
			if _, ok := p.lines[kp]; !ok {
				p.lines[kp] = k.Line
			}
			p.index(v, kp)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			p.entries = append(p.entries, keyEntry{path: ip, key: fmt.Sprintf("[%d]", i), keyLine: c.Line, valLine: c.Line})
			if _, ok := p.lines[ip]; !ok {
				p.lines[ip] = c.Line
			}
			p.index(c, ip)
		}
	}
}

var (
	reUnknownField = regexp.MustCompile(`^field (.+) not found in type \S+$`)
	reFieldSet     = regexp.MustCompile(`^field (.+) already set in type \S+$`)
	reDupKey       = regexp.MustCompile(`^mapping key (".*") already defined at line (\d+)$`)
	reCannot       = regexp.MustCompile("^cannot unmarshal (!![a-z]+)(?: `.*`)? into (\\S+)$")
	// yaml.v3 quotes an unknown alias name: with `password: *secret` that
	// name is the password.
	reAnchor = regexp.MustCompile(`unknown anchor '.*' referenced`)
	// Likewise a local tag: `password: !secret` makes the password a tag.
	reLocalTag = regexp.MustCompile("cannot unmarshal ![^!\\s]\\S*(?: `.*`)?")
)

// decodeErrors turns a yaml.v3 error into ConfigErrors, adding key paths and
// removing the values yaml quotes (they may be secrets).
func (p *parser) decodeErrors(err error) ConfigErrors {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	for _, msg := range msgs {
		msg = reAnchor.ReplaceAllString(msg, "unknown anchor referenced (quote a value that starts with *)")
		msg = reLocalTag.ReplaceAllString(msg, "cannot unmarshal a value with an unknown YAML tag (quote a value that starts with !)")
		m := reYAMLLine.FindStringSubmatch(msg)
		if m == nil {
			p.add(0, "", errors.New(strings.TrimPrefix(msg, "yaml: ")))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		text := m[2]
		switch {
		case reUnknownField.MatchString(text):
			key := reUnknownField.FindStringSubmatch(text)[1]
			p.add(line, p.keyAt(line, key), errors.New("unknown key"))
		case reFieldSet.MatchString(text):
			key := reFieldSet.FindStringSubmatch(text)[1]
			p.add(line, p.keyAt(line, key), errors.New("key set more than once"))
		case reDupKey.MatchString(text):
			sm := reDupKey.FindStringSubmatch(text)
			key, uerr := strconv.Unquote(sm[1])
			if uerr != nil {
				key = sm[1]
			}
			p.add(line, p.keyAt(line, key), fmt.Errorf("duplicate key (already defined at line %s)", sm[2]))
		case reCannot.MatchString(text):
			sm := reCannot.FindStringSubmatch(text)
			want := "a different type"
			switch {
			case strings.HasPrefix(sm[2], "[]"):
				want = "a list"
			case strings.HasPrefix(sm[2], "main.raw"):
				want = "a mapping"
			}
			p.add(line, p.valueAt(line), fmt.Errorf("expected %s, got %s", want, tagName(sm[1])))
		default:
			p.add(line, "", errors.New(text))
		}
	}
	return p.sorted()
}

// keyAt finds the path of key written at line.
func (p *parser) keyAt(line int, key string) string {
	for _, e := range p.entries {
		if e.keyLine == line && e.key == key {
			return e.path
		}
	}
	return key
}

// valueAt finds the path of the last key or item whose value starts at line.
func (p *parser) valueAt(line int) string {
	path := ""
	for _, e := range p.entries {
		if e.valLine == line {
			path = e.path
		}
	}
	return path
}

func tagName(tag string) string {
	switch tag {
	case "!!str":
		return "a string"
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!null":
		return "nothing"
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	}
	return tag
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return tagName(n.ShortTag())
}

// ---------------------------------------------------------------------------
// Conversion of scalars.

// envRef matches exactly ${NAME} and ${NAME:-default}; nothing else is expanded.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// expandEnv expands ${NAME} and ${NAME:-default} in s. Every other '$' is kept.
// It returns the names of unset variables referenced without a default.
func expandEnv(s string) (string, []string) {
	var missing []string
	out := envRef.ReplaceAllStringFunc(s, func(ref string) string {
		m := envRef.FindStringSubmatch(ref)
		name, def := m[1], m[2]
		v, ok := os.LookupEnv(name)
		if def != "" {
			if !ok || v == "" {
				return def[2:]
			}
			return v
		}
		if !ok {
			missing = append(missing, name)
			return ""
		}
		return v
	})
	return out, missing
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// text returns the expanded text of scalar n. set is false when n is absent or
// null; ok is false after a problem was recorded.
func (p *parser) text(n *yaml.Node, field string) (s string, set, ok bool) {
	if n.Kind == 0 {
		return "", false, true
	}
	n = deref(n)
	if isNull(n) {
		return "", false, true
	}
	if n.Kind != yaml.ScalarNode {
		p.fail(field, "expected a single value, got %s", kindName(n))
		return "", false, false
	}
	v, missing := expandEnv(n.Value)
	if len(missing) > 0 && !p.offline {
		for _, name := range missing {
			p.fail(field, "${%s}: environment variable %s is not set (use ${%s:-default} for a default)", name, name, name)
		}
		return "", false, false
	}
	return v, true, true
}

// str sets *dst when the key is present; null means "".
func (p *parser) str(n *yaml.Node, field string, dst *string) {
	if n.Kind == 0 {
		return
	}
	s, _, ok := p.text(n, field)
	if ok {
		*dst = s
	}
}

func (p *parser) duration(n *yaml.Node, field string, dst *time.Duration) {
	s, set, ok := p.text(n, field)
	if !ok || !set {
		return
	}
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			p.fail(field, "%q has no unit: use a Go duration such as 30s, 15m or 168h", s)
		} else {
			p.fail(field, "%q is not a duration: use a Go duration such as 30s, 15m or 168h", s)
		}
		return
	}
	*dst = d
}

var (
	reSize    = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)
	sizeUnits = map[string]float64{
		"": 1, "b": 1,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	}
)

// parseSize parses "512KiB", "10MB" (SI, 1000-based), "1GiB", "100B" or a plain
// number of bytes.
func parseSize(s string) (int64, error) {
	m := reSize.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size: use a number of bytes with an optional unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 512KiB or 1GiB", s)
	}
	mult, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q: use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB", s, m[2])
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	v := n * mult
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	return int64(v), nil
}

func (p *parser) size(n *yaml.Node, field string, dst *int64) {
	s, set, ok := p.text(n, field)
	if !ok || !set {
		return
	}
	v, err := parseSize(s)
	if err != nil {
		p.fail(field, "%v", err)
		return
	}
	*dst = v
}

// boolean sets *dst from true/false; absent or null keeps the default. No
// ${...} expansion: only string values expand.
func (p *parser) boolean(n *yaml.Node, field string, dst *bool) bool {
	if n.Kind == 0 {
		return false
	}
	n = deref(n)
	if isNull(n) {
		return false
	}
	if n.Kind == yaml.ScalarNode {
		switch strings.ToLower(n.Value) {
		case "true":
			*dst = true
			return true
		case "false":
			*dst = false
			return true
		}
	}
	p.fail(field, "expected true or false")
	return false
}

func (p *parser) integer(n *yaml.Node, field string, dst *int) {
	if n.Kind == 0 {
		return
	}
	n = deref(n)
	if isNull(n) {
		return
	}
	if n.Kind == yaml.ScalarNode {
		if v, err := strconv.Atoi(n.Value); err == nil {
			*dst = v
			return
		}
	}
	p.fail(field, "expected an integer")
}

// secret resolves key / key_file into *dst. Secret values are never put in errors.
func (p *parser) secret(val, file *yaml.Node, base, key string, dst *string) {
	vField, fField := base+"."+key, base+"."+key+"_file"
	var v string
	p.str(val, vField, &v)
	var path string
	p.str(file, fField, &path)
	if path == "" {
		*dst = v
		return
	}
	if v != "" {
		p.fail(fField, "set either %s or %s_file, not both", key, key)
		p.bad[vField] = true
		return
	}
	if p.offline {
		return
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.dir, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		p.fail(fField, "read secret file: %v", err)
		p.bad[vField] = true
		return
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		p.fail(fField, "secret file %s is empty", path)
		p.bad[vField] = true
		return
	}
	*dst = s
}

// strList converts a list of scalars; nil (absent or null) stays nil, [] gives
// an empty, non-nil slice.
func (p *parser) strList(ns []yaml.Node, base string) []string {
	if ns == nil {
		return nil
	}
	out := make([]string, 0, len(ns))
	for j := range ns {
		var s string
		p.str(&ns[j], fmt.Sprintf("%s[%d]", base, j), &s)
		out = append(out, s)
	}
	return out
}

// apply copies the decoded file over the defaults in cfg and fills derived defaults.
func (p *parser) apply(r *rawConfig, cfg *Config) {
	p.str(&r.Gateway.ID, "gateway.id", &cfg.Gateway.ID)
	p.str(&r.Log.Level, "log.level", &cfg.Log.Level)
	p.str(&r.Log.Format, "log.format", &cfg.Log.Format)

	w := &cfg.Webhook
	p.str(&r.Webhook.Listen, "webhook.listen", &w.Listen)
	p.str(&r.Webhook.TLS.CertFile, "webhook.tls.cert_file", &w.TLS.CertFile)
	p.str(&r.Webhook.TLS.KeyFile, "webhook.tls.key_file", &w.TLS.KeyFile)
	p.size(&r.Webhook.MaxBody, "webhook.max_body", &w.MaxBody)
	if ra := r.Webhook.TLS.ACME; ra != nil {
		a := &WebhookACME{DirectoryURL: bridge.LetsEncryptProduction}
		a.Domains = p.strList(ra.Domains, "webhook.tls.acme.domains")
		p.str(&ra.Email, "webhook.tls.acme.email", &a.Email)
		p.str(&ra.CacheDir, "webhook.tls.acme.cache_dir", &a.CacheDir)
		p.str(&ra.DirectoryURL, "webhook.tls.acme.directory_url", &a.DirectoryURL)
		p.str(&ra.CAFile, "webhook.tls.acme.ca_file", &a.CAFile)
		p.str(&ra.HTTPListen, "webhook.tls.acme.http_listen", &a.HTTPListen)
		w.TLS.ACME = a
	}
	if len(r.Webhook.Routes) > 0 {
		w.Routes = make([]RouteConfig, len(r.Webhook.Routes))
		for i := range r.Webhook.Routes {
			rr, base := &r.Webhook.Routes[i], fmt.Sprintf("webhook.routes[%d]", i)
			rt := &w.Routes[i]
			p.str(&rr.Path, base+".path", &rt.Path)
			p.secret(&rr.Token, &rr.TokenFile, base, "token", &rt.Token)
			p.str(&rr.Project, base+".project", &rt.Project)
			for j := range rr.DevicePrefixes {
				var s string
				p.str(&rr.DevicePrefixes[j], fmt.Sprintf("%s.device_prefixes[%d]", base, j), &s)
				rt.DevicePrefixes = append(rt.DevicePrefixes, s)
			}
		}
	}

	b := &cfg.Buffer
	p.str(&r.Buffer.Path, "buffer.path", &b.Path)
	p.size(&r.Buffer.MaxBytes, "buffer.max_bytes", &b.MaxBytes)
	p.duration(&r.Buffer.MaxAge, "buffer.max_age", &b.MaxAge)
	p.str(&r.Buffer.WhenFull, "buffer.when_full", &b.WhenFull)
	p.duration(&r.Buffer.DedupWindow, "buffer.dedup_window", &b.DedupWindow)
	// ACME state lives beside the queue: /var/lib/wittra-gateway/acme when packaged.
	if a := w.TLS.ACME; a != nil && a.CacheDir == "" {
		a.CacheDir = filepath.Join(filepath.Dir(b.Path), "acme")
	}

	// Present and empty (or null) means off; absent keeps the default.
	p.str(&r.Admin.Listen, "admin.listen", &cfg.Admin.Listen)
	for i := range r.Admin.Users {
		ru, base := &r.Admin.Users[i], fmt.Sprintf("admin.users[%d]", i)
		var u AdminUser
		p.str(&ru.Username, base+".username", &u.Username)
		p.secret(&ru.Password, &ru.PasswordFile, base, "password", &u.PasswordHash)
		cfg.Admin.Users = append(cfg.Admin.Users, u)
	}

	br := &cfg.Broker
	p.boolean(&r.Broker.Enabled, "broker.enabled", &br.Enabled)
	if r.Broker.Listeners != nil { // absent or null keeps the default; [] means none
		br.Listeners = make([]ListenerConfig, len(r.Broker.Listeners))
		for i := range r.Broker.Listeners {
			rl, base := &r.Broker.Listeners[i], fmt.Sprintf("broker.listeners[%d]", i)
			l := &br.Listeners[i]
			p.str(&rl.Type, base+".type", &l.Type)
			p.str(&rl.Address, base+".address", &l.Address)
			p.str(&rl.CertFile, base+".cert_file", &l.CertFile)
			p.str(&rl.KeyFile, base+".key_file", &l.KeyFile)
			p.str(&rl.ClientCAFile, base+".client_ca_file", &l.ClientCAFile)
			l.AllowedOrigins = p.strList(rl.AllowedOrigins, base+".allowed_origins")
		}
	}
	br.Users = nil
	for i := range r.Broker.Users {
		ru, base := &r.Broker.Users[i], fmt.Sprintf("broker.users[%d]", i)
		var u UserConfig
		p.str(&ru.Username, base+".username", &u.Username)
		p.secret(&ru.Password, &ru.PasswordFile, base, "password", &u.Password)
		p.boolean(&ru.Publish, base+".publish", &u.Publish)
		// Absent or null: the default; [] means none.
		u.Subscribe = p.strList(ru.Subscribe, base+".subscribe")
		if u.Subscribe == nil {
			u.Subscribe = []string{"#"}
		}
		u.PublishTopics = p.strList(ru.PublishTopics, base+".publish_topics")
		if u.PublishTopics == nil && u.Publish {
			u.PublishTopics = []string{"#"}
		}
		br.Users = append(br.Users, u)
	}
	if !p.boolean(&r.Broker.AllowAnonymous, "broker.allow_anonymous", &br.AllowAnonymous) {
		br.AllowAnonymous = len(br.Users) == 0
	}

	if cfg.Gateway.ID == "" {
		cfg.Gateway.ID = defaultGatewayID()
	}
	if cfg.Log.Level == "" {
		cfg.Log.Level = DefaultLogLevel
	}
	if cfg.Log.Format == "" {
		cfg.Log.Format = DefaultLogFormat
	}

	switch {
	case r.Sinks != nil:
		cfg.Sinks = make([]SinkConfig, len(r.Sinks))
		for i := range r.Sinks {
			cfg.Sinks[i] = p.sink(&r.Sinks[i], fmt.Sprintf("sinks[%d]", i), cfg.Gateway.ID)
		}
	case !br.Enabled:
		cfg.Sinks = nil // the default local sink needs the embedded broker
	}
	p.wittraAPI(r.WittraAPI, cfg) // config_wittraapi.go
}

func (p *parser) sink(rs *rawSink, base, gatewayID string) SinkConfig {
	s := SinkConfig{TopicPrefix: DefaultTopicPrefix, QoS: DefaultQoS}
	p.str(&rs.Name, base+".name", &s.Name)
	p.str(&rs.Type, base+".type", &s.Type)
	p.str(&rs.TopicPrefix, base+".topic_prefix", &s.TopicPrefix)
	p.boolean(&rs.Values, base+".values", &s.Values)
	p.boolean(&rs.Retain, base+".retain", &s.Retain)
	p.str(&rs.URL, base+".url", &s.URL)
	p.str(&rs.ClientID, base+".client_id", &s.ClientID)
	p.str(&rs.Username, base+".username", &s.Username)
	p.secret(&rs.Password, &rs.PasswordFile, base, "password", &s.Password)
	p.str(&rs.TLS.CAFile, base+".tls.ca_file", &s.TLS.CAFile)
	p.str(&rs.TLS.CertFile, base+".tls.cert_file", &s.TLS.CertFile)
	p.str(&rs.TLS.KeyFile, base+".tls.key_file", &s.TLS.KeyFile)
	p.boolean(&rs.TLS.InsecureSkipVerify, base+".tls.insecure_skip_verify", &s.TLS.InsecureSkipVerify)
	p.integer(&rs.QoS, base+".qos", &s.QoS)
	p.str(&rs.Mode, base+".mode", &s.Mode)
	p.str(&rs.Tenant, base+".tenant", &s.Tenant)
	p.str(&rs.DeviceName, base+".device_name", &s.DeviceName)
	p.str(&rs.TokenURL, base+".token_url", &s.TokenURL)
	p.jetstreamSink(&rs.rawJetStream, base, &s)
	p.duration(&rs.RetainMaxAge, base+".retain_max_age", &s.RetainMaxAge)
	p.integer(&rs.RetainMaxTopics, base+".retain_max_topics", &s.RetainMaxTopics)
	p.size(&rs.RetainMaxBytes, base+".retain_max_bytes", &s.RetainMaxBytes)
	p.deviceTopicsSink(&rs.rawDeviceTopics, base, &s)
	p.str(&rs.Backlog, base+".backlog", &s.Backlog)
	switch s.Type {
	case "mqtt":
		if s.ClientID == "" {
			s.ClientID = "wittra-" + gatewayID
		}
	case "cumulocity":
		if s.Mode == "" {
			s.Mode = DefaultCumulocityMode
		}
		if s.DeviceName == "" {
			s.DeviceName = "Wittra gateway " + gatewayID
		}
	}
	return s
}

// ---------------------------------------------------------------------------
// Validation.

var reSinkName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// hasTopicMeta reports whether s holds an MQTT wildcard, a level separator or NUL.
func hasTopicMeta(s string, slashOK bool) bool {
	if !slashOK && strings.Contains(s, "/") {
		return true
	}
	return strings.ContainsAny(s, "+#\x00")
}

func oneOf(s string, allowed ...string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}

func (p *parser) hostPort(field, addr string) {
	if addr == "" {
		p.invalid(field, "must not be empty (host:port)")
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		p.invalid(field, "must be host:port, e.g. 127.0.0.1:8080 or :8080")
	}
}

// validateACME checks webhook.tls.acme.
func (p *parser) validateACME(c *Config, a *WebhookACME) {
	const base = "webhook.tls.acme"
	if c.Webhook.TLS.CertFile != "" || c.Webhook.TLS.KeyFile != "" {
		p.invalid(base, "set either acme or cert_file/key_file, not both")
	}
	if len(a.Domains) == 0 {
		p.invalid(base+".domains", "at least one domain is required")
	}
	seen := map[string]int{}
	for i, d := range a.Domains {
		field := fmt.Sprintf("%s.domains[%d]", base, i)
		if err := bridge.CheckACMEDomain(d); err != nil {
			p.invalid(field, "%v", err)
			continue
		}
		if j, dup := seen[strings.ToLower(d)]; dup {
			p.invalid(field, "duplicate of %s.domains[%d]", base, j)
		}
		seen[strings.ToLower(d)] = i
	}
	if a.Email != "" && !strings.Contains(a.Email, "@") {
		p.invalid(base+".email", "must be an address (name@host)")
	}
	if a.CacheDir == "" {
		p.invalid(base+".cache_dir", "must not be empty")
	}
	if u, err := url.Parse(a.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
		p.invalid(base+".directory_url", "must be an https:// URL")
	}
	if a.HTTPListen != "" {
		p.hostPort(base+".http_listen", a.HTTPListen)
	}
}

func (p *parser) validate(c *Config) {
	switch {
	case c.Gateway.ID == "":
		p.invalid("gateway.id", "must not be empty")
	case hasTopicMeta(c.Gateway.ID, false):
		p.invalid("gateway.id", "must not contain / + # or NUL")
	}

	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		p.invalid("log.level", "must be debug, info, warn or error (got %q)", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "json", "console", "journald") {
		p.invalid("log.format", "must be json, console or journald (got %q)", c.Log.Format)
	}

	w := c.Webhook
	p.hostPort("webhook.listen", w.Listen)
	if (w.TLS.CertFile == "") != (w.TLS.KeyFile == "") {
		p.invalid("webhook.tls", "cert_file and key_file must be set together")
	}
	if a := w.TLS.ACME; a != nil {
		p.validateACME(c, a)
	}
	if w.MaxBody <= 0 {
		p.invalid("webhook.max_body", "must be greater than 0")
	}
	if len(w.Routes) == 0 {
		p.invalid("webhook.routes", "at least one route is required")
	}
	seenPath := map[string]int{}
	for i, r := range w.Routes {
		base := fmt.Sprintf("webhook.routes[%d]", i)
		switch {
		case !strings.HasPrefix(r.Path, "/"):
			p.invalid(base+".path", "must start with /")
		default:
			if j, dup := seenPath[r.Path]; dup {
				p.invalid(base+".path", "duplicate path %q (also webhook.routes[%d])", r.Path, j)
			} else {
				seenPath[r.Path] = i
			}
		}
		if hasTopicMeta(r.Project, false) {
			p.invalid(base+".project", "must not contain / + # or NUL")
		}
		for j, pre := range r.DevicePrefixes {
			f := fmt.Sprintf("%s.device_prefixes[%d]", base, j)
			switch {
			case pre == "":
				p.invalid(f, "must not be empty")
			case hasTopicMeta(pre, false):
				p.invalid(f, "must not contain / + # or NUL")
			}
		}
	}

	b := c.Buffer
	if b.Path == "" {
		p.invalid("buffer.path", "must not be empty")
	}
	if b.MaxBytes < minQueueBytes {
		p.invalid("buffer.max_bytes", "must be at least 64KiB (a few messages)")
	}
	if b.MaxAge <= 0 {
		p.invalid("buffer.max_age", "must be greater than 0")
	}
	if !oneOf(b.WhenFull, "reject", "drop_oldest") {
		p.invalid("buffer.when_full", "must be reject or drop_oldest (got %q)", b.WhenFull)
	}
	if b.DedupWindow < 0 {
		p.invalid("buffer.dedup_window", "must not be negative")
	}

	if c.Admin.Listen != "" {
		p.hostPort("admin.listen", c.Admin.Listen)
	}
	seenAdmin := map[string]int{}
	for i, u := range c.Admin.Users {
		base := fmt.Sprintf("admin.users[%d]", i)
		if u.Username == "" {
			p.invalid(base+".username", "required")
		} else if j, dup := seenAdmin[u.Username]; dup {
			p.invalid(base+".username", "duplicate username (also admin.users[%d])", j)
		} else {
			seenAdmin[u.Username] = i
		}
		field := base + ".password"
		if _, inFile := p.lines[base+".password_file"]; inFile {
			field = base + ".password_file"
		}
		if u.PasswordHash == "" {
			p.invalid(base+".password", "required (a bcrypt hash, in password or password_file)")
		} else if err := status.CheckHash(u.PasswordHash); err != nil {
			p.invalid(field, "%v", err)
		}
	}

	br := c.Broker
	for i, l := range br.Listeners {
		base := fmt.Sprintf("broker.listeners[%d]", i)
		if !oneOf(l.Type, "tcp", "tls", "websocket") {
			p.invalid(base+".type", "must be tcp, tls or websocket (got %q)", l.Type)
		}
		p.hostPort(base+".address", l.Address)
		switch {
		case l.Type == "tls" && l.CertFile == "":
			p.invalid(base+".cert_file", "required for type tls")
		case l.Type == "tls" && l.KeyFile == "":
			p.invalid(base+".key_file", "required for type tls")
		case (l.CertFile == "") != (l.KeyFile == ""):
			p.invalid(base, "cert_file and key_file must be set together")
		case l.Type == "tcp" && l.CertFile != "":
			p.invalid(base+".cert_file", "needs type tls (or websocket for wss)")
		}
		switch {
		case l.ClientCAFile == "":
		case l.Type == "tcp":
			p.invalid(base+".client_ca_file", "needs type tls, or websocket with cert_file and key_file")
		case l.Type == "websocket" && l.CertFile == "":
			p.invalid(base+".client_ca_file", "needs TLS: set cert_file and key_file too")
		}
		if len(l.AllowedOrigins) > 0 && l.Type != "websocket" {
			p.invalid(base+".allowed_origins", "only for type websocket")
		}
		for j, o := range l.AllowedOrigins {
			if err := checkOrigin(o); err != nil {
				p.invalid(fmt.Sprintf("%s.allowed_origins[%d]", base, j), "%v", err)
			}
		}
	}
	seenUser := map[string]int{}
	for i, u := range br.Users {
		base := fmt.Sprintf("broker.users[%d]", i)
		if u.Username == "" {
			p.invalid(base+".username", "required")
		} else if j, dup := seenUser[u.Username]; dup {
			p.invalid(base+".username", "duplicate username (also broker.users[%d])", j)
		} else {
			seenUser[u.Username] = i
		}
		if u.Password == "" {
			p.invalid(base+".password", "required (password or password_file)")
		} else if err := broker.CheckPassword(u.Password); err != nil {
			field := base + ".password"
			if _, inFile := p.lines[base+".password_file"]; inFile {
				field = base + ".password_file"
			}
			p.invalid(field, "%v", err)
		}
		for j, f := range u.Subscribe {
			if err := broker.CheckFilter(f); err != nil {
				p.invalid(fmt.Sprintf("%s.subscribe[%d]", base, j), "not a valid topic filter: %v", err)
			}
		}
		switch {
		case !u.Publish && len(u.PublishTopics) > 0:
			p.invalid(base+".publish_topics", "needs publish: true")
		case u.Publish && u.PublishTopics != nil && len(u.PublishTopics) == 0:
			p.invalid(base+".publish_topics", "empty: to forbid publishing, set publish: false")
		}
		for j, f := range u.PublishTopics {
			if err := broker.CheckFilter(f); err != nil {
				p.invalid(fmt.Sprintf("%s.publish_topics[%d]", base, j), "not a valid topic filter: %v", err)
			}
		}
	}

	// Two servers of this process on the same address cannot both start
	// (port 0 asks the system for a free port each time, so it never clashes).
	addrs := map[string]string{}
	claim := func(field, addr string) {
		if addr == "" || p.bad[field] {
			return
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
			return
		}
		if other, dup := addrs[addr]; dup {
			p.invalid(field, "same address as %s", other)
			return
		}
		addrs[addr] = field
	}
	claim("webhook.listen", w.Listen)
	if w.TLS.ACME != nil {
		claim("webhook.tls.acme.http_listen", w.TLS.ACME.HTTPListen)
	}
	claim("admin.listen", c.Admin.Listen)
	if br.Enabled {
		for i, l := range br.Listeners {
			claim(fmt.Sprintf("broker.listeners[%d].address", i), l.Address)
		}
	}

	if len(c.Sinks) == 0 {
		if br.Enabled {
			p.invalid("sinks", "at least one sink is required")
		} else {
			p.invalid("sinks", "at least one sink is required (the default local sink needs broker.enabled: true)")
		}
	}
	seenSink := map[string]int{}
	seenClientID := map[string]int{} // client ids of subscriber sinks
	hasC8Y := false
	for i, s := range c.Sinks {
		base := fmt.Sprintf("sinks[%d]", i)
		switch {
		case s.Name == "":
			p.invalid(base+".name", "required")
		case !reSinkName.MatchString(s.Name):
			p.invalid(base+".name", "may only contain letters, digits, _ and -")
		default:
			if j, dup := seenSink[s.Name]; dup {
				p.invalid(base+".name", "duplicate sink name %q (also sinks[%d])", s.Name, j)
			} else {
				seenSink[s.Name] = i
			}
		}
		switch {
		case s.TopicPrefix == "":
			p.invalid(base+".topic_prefix", "must not be empty")
		case hasTopicMeta(s.TopicPrefix, true):
			p.invalid(base+".topic_prefix", "must not contain + # or NUL")
		case strings.HasPrefix(s.TopicPrefix, "/") || strings.HasSuffix(s.TopicPrefix, "/"):
			p.invalid(base+".topic_prefix", "must not start or end with /")
		}
		if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
			p.invalid(base+".tls", "cert_file and key_file must be set together")
		}
		switch s.Type {
		case "broker":
			if !br.Enabled {
				p.invalid(base+".type", "type broker needs broker.enabled: true")
			}
			p.checkRetainBounds(base, s)
		case "mqtt":
			p.noRetainBounds(base, s)
			if s.URL == "" {
				p.invalid(base+".url", "required for type mqtt")
			} else {
				p.checkURL(base+".url", s.URL, []string{"tcp", "ssl", "ws", "wss"}, "tcp://, ssl://, ws:// or wss://")
			}
			if s.QoS < 0 || s.QoS > 2 {
				p.invalid(base+".qos", "must be 0, 1 or 2")
			}
		case "cumulocity":
			hasC8Y = true
			p.noRetainBounds(base, s)
			switch s.Mode {
			case "mqtt", "rest":
				if s.URL == "" {
					p.invalid(base+".url", "required for type cumulocity")
				} else if s.Mode == "mqtt" {
					p.checkURL(base+".url", s.URL, []string{"tcp", "mqtts", "ssl"}, "tcp://, mqtts:// or ssl:// (mode mqtt)")
				} else {
					p.checkURL(base+".url", s.URL, []string{"https", "http"}, "https:// or http:// (mode rest)")
				}
			default:
				p.invalid(base+".mode", "must be mqtt or rest (got %q)", s.Mode)
			}
			if s.TLS.CertFile != "" && s.Password == "" {
				p.checkC8YCertLogin(base, s, c.Gateway.ID) // certificate login: c8ycert.go
				break
			}
			if s.Tenant == "" {
				p.invalid(base+".tenant", "required for type cumulocity")
			}
			if s.Username == "" {
				p.invalid(base+".username", "required for type cumulocity")
			}
			if s.Password == "" {
				p.invalid(base+".password", "required for type cumulocity (password or password_file; or a device certificate in tls.cert_file and key_file)")
			}
			p.c8yCertOnly(base, s)
		case "jetstream":
		case "subscriber":
			p.subscriberSink(c, base, s, seenClientID)
		case "":
			p.invalid(base+".type", "required: broker, subscriber, mqtt, cumulocity or jetstream")
		default:
			p.invalid(base+".type", "must be broker, subscriber, mqtt, cumulocity or jetstream (got %q)", s.Type)
		}
		p.validateJetStream(base, s)
		p.validateDeviceTopics(base, s)
		if _, err := bridge.ParseBacklog(s.Backlog); err != nil {
			p.invalid(base+".backlog", "%v", err)
		}
		p.sinkKeysOfType(base, s.Type)
	}
	if hasC8Y && strings.Contains(c.Gateway.ID, ":") {
		p.invalid("gateway.id", "must not contain ':' with a cumulocity sink (it is the Cumulocity client id)")
	}
	p.validateWittraAPI(c) // config_wittraapi.go
}

// subscriberSink validates a `type: subscriber` sink (a durable client of
// the embedded broker).
func (p *parser) subscriberSink(c *Config, base string, s SinkConfig, seen map[string]int) {
	br := c.Broker
	if !br.Enabled {
		p.invalid(base+".type", "type subscriber needs broker.enabled: true")
	}
	switch {
	case s.ClientID == "":
		p.invalid(base+".client_id", "required for type subscriber (the consumer's MQTT client id)")
	case s.ClientID == c.Gateway.ID || s.ClientID == "wittra-"+c.Gateway.ID:
		p.invalid(base+".client_id", "must not be the gateway's own id")
	default:
		if j, dup := seen[s.ClientID]; dup {
			p.invalid(base+".client_id", "same client_id as sinks[%d]: one durable subscriber per client", j)
		} else {
			seen[s.ClientID] = p.sinkIndex(c, s.Name)
		}
	}
	if s.QoS != 1 && s.QoS != 2 {
		p.invalid(base+".qos", "must be 1 or 2 for type subscriber (the cursor moves on the client's acknowledgement)")
	}
	if s.Retain {
		p.invalid(base+".retain", "not for type subscriber: it delivers every message to one client; retained values belong to a type broker sink")
	}
	if len(br.Users) > 0 {
		found := false
		for _, u := range br.Users {
			found = found || u.Username == s.Username
		}
		switch {
		case s.Username == "":
			p.invalid(base+".username", "required for type subscriber when broker.users is set: only this user may take the client's session")
		case !found:
			p.invalid(base+".username", "%q is not one of broker.users", s.Username)
		}
	}
}

// minQueueBytes is the smallest buffer.max_bytes: below it the queue could
// hold hardly a request.
const minQueueBytes = 64 << 10

// sinkKeys are the keys each sink type reads; any other key on a sink of
// that type is an error (with its line), so a key that belongs to another
// type is never silently ignored.
var sinkKeys = map[string][]string{
	"broker":     append([]string{"topic_prefix", "values", "retain", "retain_max_age", "retain_max_topics", "retain_max_bytes"}, deviceTopicsKeys...),
	"subscriber": {"client_id", "username", "topic_prefix", "values", "qos"},
	"mqtt":       append([]string{"url", "client_id", "username", "password", "password_file", "tls", "qos", "retain", "topic_prefix", "values"}, deviceTopicsKeys...),
	"cumulocity": {"mode", "url", "tenant", "username", "password", "password_file", "tls", "device_name", "client_id", "token_url"},
	"jetstream":  append([]string{"username", "password", "password_file", "tls"}, jetstreamKeys...),
}

// commonSinkKeys are read for every sink type (besides name and type).
var commonSinkKeys = []string{"backlog"}

// sinkKeysOfType reports the keys of the sink at base that its type does
// not read (unless a more specific check already named them).
func (p *parser) sinkKeysOfType(base, typ string) {
	allowed, known := sinkKeys[typ]
	if !known {
		return // the type itself is the error
	}
	reported := map[string]bool{}
	for _, e := range p.errs {
		reported[e.Field] = true
	}
	for _, e := range p.entries {
		key, direct := strings.CutPrefix(e.path, base+".")
		if !direct || strings.ContainsAny(key, ".[") || key == "name" || key == "type" || slices.Contains(commonSinkKeys, key) || slices.Contains(allowed, key) || reported[e.path] {
			continue
		}
		p.fail(e.path, "not a key of type %s (its keys: %s)", typ, strings.Join(allowed, ", "))
	}
}

// sinkIndex returns the position of the sink named name.
func (p *parser) sinkIndex(c *Config, name string) int {
	for i, s := range c.Sinks {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// checkOrigin accepts a browser Origin as sent in the header: scheme://host[:port]
// with scheme http or https, nothing else.
func checkOrigin(o string) error {
	const want = "want scheme://host[:port], e.g. https://dashboard.example.com"
	if o == "" {
		return errors.New("must not be empty")
	}
	if o == "null" || o == "*" {
		return fmt.Errorf("%q is not accepted: %s", o, want)
	}
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not an origin: %s", o, want)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: scheme must be http or https", o)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q has no host: %s", o, want)
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(o, "#"):
		return fmt.Errorf("%q has more than scheme://host[:port] (browsers send no path, not even a trailing /)", o)
	}
	return nil
}

// checkURL validates a sink URL without ever quoting it (it may hold credentials).
func (p *parser) checkURL(field, raw string, schemes []string, want string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		p.invalid(field, "not a valid URL")
	case !oneOf(u.Scheme, schemes...):
		p.invalid(field, "must start with %s", want)
	case u.User != nil:
		p.invalid(field, "must not contain credentials: use username and password")
	case u.Host == "":
		p.invalid(field, "must name a host")
	}
}

// checkRetainBounds validates the retained-topic bounds of a broker sink
// (0 keeps the default).
func (p *parser) checkRetainBounds(base string, s SinkConfig) {
	if s.RetainMaxAge < 0 {
		p.invalid(base+".retain_max_age", "must not be negative")
	} else if s.RetainMaxAge > 0 && s.RetainMaxAge < time.Minute {
		p.invalid(base+".retain_max_age", "must be at least 1m (silent devices are looked for every minute)")
	}
	if s.RetainMaxTopics < 0 || s.RetainMaxTopics > 0 && s.RetainMaxTopics < broker.MinRetainMaxTopics {
		p.invalid(base+".retain_max_topics", "must be at least %d (0 or absent: %d)", broker.MinRetainMaxTopics, broker.DefaultRetainMaxTopics)
	}
	if s.RetainMaxBytes < 0 {
		p.invalid(base+".retain_max_bytes", "must not be negative")
	}
}

// noRetainBounds rejects the retained-topic bounds where the gateway does
// not hold the retained messages (an external broker or Cumulocity).
func (p *parser) noRetainBounds(base string, s SinkConfig) {
	for _, b := range []struct {
		key string
		set bool
	}{
		{"retain_max_age", s.RetainMaxAge != 0},
		{"retain_max_topics", s.RetainMaxTopics != 0},
		{"retain_max_bytes", s.RetainMaxBytes != 0},
	} {
		if b.set {
			p.invalid(base+"."+b.key, "only for type broker (the embedded broker's retained store)")
		}
	}
}
