package main

// YAML configuration of the gateway (docs/contract.md#configuration).
//
// API used by the rest of cmd/gateway:
//
//	DefaultConfig() *Config                               static defaults (what an empty file gives)
//	ParseConfig(data []byte, dir string) (*Config, error) decode + defaults + secrets + validation
//	LoadConfig(path string) (*Config, error)              os.ReadFile ("read config: %w") + ParseConfig
//	LoadQueueConfig(path string) (*Config, error)         for the queue commands: no secrets, only queue problems
//	(*Config).Redacted() *Config                          deep copy with tokens/passwords masked, for logging
//
// Every error about the content of the file is a ConfigErrors ([]*ConfigError{Line, Field, Err}),
// one entry per problem, each formatted "line N: field: message". Secret values never appear
// in them.
//
// Every field of Config is a plain, fully resolved Go value, so no accessor is needed:
//   - strings have ${NAME} / ${NAME:-default} expanded;
//   - durations are time.Duration; every int64 is a size in bytes (max_body, max_bytes, …);
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
//
// Adding a key: a field with a yaml tag in the Config types below (a secret also gets
// `secret:"file"`, a sink key `types:"…"`). A rule about one component's own options
// belongs in that package's Validate, returning internal/field errors (config_check.go
// maps their keys to lines); config_check.go keeps the rules that span sections.

import (
	"cmp"
	"fmt"

	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"
	"wittra-gateway/bridge"
)

// Config is the whole configuration of the gateway. The yaml tags are its
// keys (config_yaml.go decodes the file straight into it); `secret:"file"`
// also accepts KEY_file, a file holding the value; `types` names the sink
// types that read a sink key.
type Config struct {
	Gateway GatewayConfig `yaml:"gateway"`
	Log     LogConfig     `yaml:"log"`
	Webhook WebhookConfig `yaml:"webhook"`
	Buffer  BufferConfig  `yaml:"buffer"`
	Admin   AdminConfig   `yaml:"admin"`
	Broker  BrokerConfig  `yaml:"broker"`
	Sinks   []SinkConfig  `yaml:"sinks"`
	// WittraAPI is where device names come from (config_wittraapi.go);
	// nil when the section is absent.
	WittraAPI *WittraAPIConfig `yaml:"wittra_api"`
}

// GatewayConfig is the `gateway:` section.
type GatewayConfig struct {
	ID string `yaml:"id"` // never empty; names the gateway in status topics and Cumulocity
}

// LogConfig is the `log:` section.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error (never empty)
	Format string `yaml:"format"` // json | console | journald
}

// WebhookConfig is the `webhook:` section.
type WebhookConfig struct {
	Listen  string        `yaml:"listen"` // host:port
	TLS     WebhookTLS    `yaml:"tls"`
	MaxBody int64         `yaml:"max_body"` // bytes, > 0
	Routes  []RouteConfig `yaml:"routes"`
}

// WebhookTLS enables HTTPS when both files are set, or when ACME is.
type WebhookTLS struct {
	CertFile string       `yaml:"cert_file"`
	KeyFile  string       `yaml:"key_file"`
	ACME     *WebhookACME `yaml:"acme"` // nil: no ACME (the key is absent)
}

// WebhookACME is `webhook.tls.acme:`: certificates from an ACME CA.
type WebhookACME struct {
	Domains      []string `yaml:"domains"`
	Email        string   `yaml:"email"`
	CacheDir     string   `yaml:"cache_dir"`     // default: "acme" beside buffer.path
	DirectoryURL string   `yaml:"directory_url"` // default: Let's Encrypt production
	CAFile       string   `yaml:"ca_file"`       // extra roots for directory_url (a private CA); optional
	HTTPListen   string   `yaml:"http_listen"`   // host:port for http-01; "" means tls-alpn-01 only
}

func (a *WebhookACME) setDefaults() { a.DirectoryURL = bridge.LetsEncryptProduction }

// RouteConfig is one webhook route (one Wittra project integration).
type RouteConfig struct {
	Path           string   `yaml:"path"`                // starts with "/"
	Token          string   `yaml:"token" secret:"file"` // "" means no authentication
	Project        string   `yaml:"project"`             // project used when the body has no projectId
	DevicePrefixes []string `yaml:"device_prefixes"`     // empty means every device is accepted
}

// BufferConfig is the `buffer:` section (the bbolt queue).
type BufferConfig struct {
	Path        string        `yaml:"path"`
	MaxBytes    int64         `yaml:"max_bytes"`    // bytes, >= minQueueBytes
	MaxAge      time.Duration `yaml:"max_age"`      // > 0
	WhenFull    string        `yaml:"when_full"`    // reject | drop_oldest
	DedupWindow time.Duration `yaml:"dedup_window"` // >= 0; 0 disables deduplication
}

// AdminConfig is the `admin:` section.
type AdminConfig struct {
	Listen string `yaml:"listen"` // host:port; "" means off
	// Users, when set, turn on HTTP basic auth for the admin listener
	// (status page, /api/status, /metrics; /healthz and /readyz stay open).
	Users []AdminUser `yaml:"users"`
}

// AdminUser is one user of the admin listener.
type AdminUser struct {
	Username     string `yaml:"username"`
	PasswordHash string `yaml:"password" secret:"file"` // bcrypt, checked to be well formed
}

// BrokerConfig is the `broker:` section (the embedded MQTT broker).
type BrokerConfig struct {
	Enabled        bool             `yaml:"enabled"`
	Listeners      []ListenerConfig `yaml:"listeners"`
	AllowAnonymous bool             `yaml:"allow_anonymous"` // resolved: explicit value, else true without users and false with users
	Users          []UserConfig     `yaml:"users"`
}

// ListenerConfig is one listener of the embedded broker.
type ListenerConfig struct {
	Type           string   `yaml:"type"`            // tcp | tls | websocket
	Address        string   `yaml:"address"`         // host:port
	CertFile       string   `yaml:"cert_file"`       // required for tls; optional for websocket (wss)
	KeyFile        string   `yaml:"key_file"`        // required for tls; optional for websocket (wss)
	ClientCAFile   string   `yaml:"client_ca_file"`  // tls / wss: require client certificates signed by these CAs
	AllowedOrigins []string `yaml:"allowed_origins"` // websocket: accepted browser Origins (scheme://host[:port]); empty = same origin
}

// UserConfig is one user of the embedded broker.
type UserConfig struct {
	Username      string   `yaml:"username"`
	Password      string   `yaml:"password" secret:"file"` // plain text or a bcrypt hash
	Subscribe     []string `yaml:"subscribe"`              // topic filters the user may read; never nil after parsing
	Publish       bool     `yaml:"publish"`
	PublishTopics []string `yaml:"publish_topics"` // topic filters the user may publish to (only with Publish)
}

// SinkConfig is one output of the gateway.
type SinkConfig struct {
	Name        string  `yaml:"name"` // unique, [A-Za-z0-9_-]+
	Type        string  `yaml:"type"` // broker | subscriber | mqtt | cumulocity | jetstream
	TopicPrefix string  `yaml:"topic_prefix" types:"broker subscriber mqtt"`
	Values      bool    `yaml:"values" types:"broker subscriber mqtt"`
	Retain      bool    `yaml:"retain" types:"broker mqtt"`
	URL         string  `yaml:"url" types:"mqtt cumulocity"`
	ClientID    string  `yaml:"client_id" types:"subscriber mqtt cumulocity"`
	Username    string  `yaml:"username" types:"subscriber mqtt cumulocity jetstream"`
	Password    string  `yaml:"password" secret:"file" types:"mqtt cumulocity jetstream"`
	TLS         SinkTLS `yaml:"tls" types:"mqtt cumulocity jetstream"`
	QoS         int     `yaml:"qos" types:"subscriber mqtt"`    // 0..2
	Mode        string  `yaml:"mode" types:"cumulocity"`        // mqtt | rest
	Tenant      string  `yaml:"tenant" types:"cumulocity"`      //
	DeviceName  string  `yaml:"device_name" types:"cumulocity"` //
	TokenURL    string  `yaml:"token_url" types:"cumulocity"`   // mode rest with certificate login

	JetStream JetStreamSinkConfig `yaml:",inline"` // type jetstream (config_jetstream.go)
	// Retained-topic bounds of a broker sink; 0 = the broker package default.
	RetainMaxAge    time.Duration `yaml:"retain_max_age" types:"broker"`    // clear a device silent this long
	RetainMaxTopics int           `yaml:"retain_max_topics" types:"broker"` // cap, oldest-heard-of devices evicted first
	RetainMaxBytes  int64         `yaml:"retain_max_bytes" types:"broker"`  // cap on retained payload bytes

	DeviceTopics DeviceTopicsSinkConfig `yaml:",inline"` // state, homeassistant (config_devicetopics.go)
	// Backlog: in_order or live_first; "" is in_order. Every sink type
	// (bridge.ParseBacklog, docs/live-first.md).
	Backlog string `yaml:"backlog"`
}

func (s *SinkConfig) setDefaults() { s.TopicPrefix, s.QoS = DefaultTopicPrefix, DefaultQoS }

// SinkTLS is the client TLS setup of an mqtt, cumulocity or jetstream sink.
type SinkTLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
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
	p := newParser(dir)
	if cfg, _ := p.parse(data); len(p.errs) == 0 {
		return cfg, nil
	}
	return nil, p.sorted(p.errs)
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
	cfg, ok := p.parse(data)
	var kept ConfigErrors
	for _, e := range p.errs {
		if !ok || strings.HasPrefix(e.Field, "buffer") || (strings.HasPrefix(e.Field, "sinks[") && strings.HasSuffix(e.Field, ".name")) {
			kept = append(kept, e)
		}
	}
	if len(kept) > 0 {
		return nil, p.sorted(kept)
	}
	return cfg, nil
}

// parse decodes and validates data, collecting every problem in p.errs.
// ok is false when the text is not YAML.
func (p *parser) parse(data []byte) (cfg *Config, ok bool) {
	cfg = DefaultConfig()
	if !p.parseYAML(data, cfg) {
		return nil, false
	}
	p.derive(cfg)
	p.validate(cfg)
	return cfg, true
}

// derive fills the defaults that depend on other values.
func (p *parser) derive(cfg *Config) {
	if cfg.Gateway.ID == "" {
		cfg.Gateway.ID = defaultGatewayID()
	}
	cfg.Log.Level = cmp.Or(cfg.Log.Level, DefaultLogLevel)
	cfg.Log.Format = cmp.Or(cfg.Log.Format, DefaultLogFormat)
	if len(cfg.Webhook.Routes) == 0 {
		cfg.Webhook.Routes = []RouteConfig{{Path: DefaultRoutePath}}
	}
	// ACME state lives beside the queue: /var/lib/wittra-gateway/acme when packaged.
	if a := cfg.Webhook.TLS.ACME; a != nil && a.CacheDir == "" {
		a.CacheDir = filepath.Join(filepath.Dir(cfg.Buffer.Path), "acme")
	}
	br := &cfg.Broker
	for i := range br.Users {
		u := &br.Users[i]
		if u.Subscribe == nil { // absent or null; [] reads nothing
			u.Subscribe = []string{"#"}
		}
		if u.PublishTopics == nil && u.Publish {
			u.PublishTopics = []string{"#"}
		}
	}
	if !p.given["broker.allow_anonymous"] {
		br.AllowAnonymous = len(br.Users) == 0
	}
	if !p.given["sinks"] && !br.Enabled {
		cfg.Sinks = nil // the default local sink needs the embedded broker
	}
	for i := range cfg.Sinks {
		s := &cfg.Sinks[i]
		switch s.Type {
		case "mqtt":
			s.ClientID = cmp.Or(s.ClientID, "wittra-"+cfg.Gateway.ID)
		case "cumulocity":
			s.Mode = cmp.Or(s.Mode, DefaultCumulocityMode)
			s.DeviceName = cmp.Or(s.DeviceName, "Wittra gateway "+cfg.Gateway.ID)
		case "jetstream":
			s.JetStream.SubjectPrefix = cmp.Or(s.JetStream.SubjectPrefix, DefaultTopicPrefix)
		}
		if c := s.JetStream.CredsFile; c != "" && !filepath.IsAbs(c) {
			s.JetStream.CredsFile = filepath.Join(p.dir, c)
		}
	}
}

// parser collects the problems of one file, with the line of every key
// path it has seen.
type parser struct {
	dir   string
	lines map[string]int  // key path ("sinks[1].url") -> line
	bad   map[string]bool // paths whose value was refused: not validated again
	given map[string]bool // paths given a value (null counts only for strings)
	said  map[string]bool // problems reported, by text
	errs  ConfigErrors
	nodes int // values decoded, bounded by maxNodes
	depth int // nesting of the value being decoded, bounded by maxDepth
	// offline: leave unset ${NAME} empty and *_file secrets unread (the
	// queue commands need neither).
	offline bool
}

func newParser(dir string) *parser {
	return &parser{dir: dir, lines: map[string]int{}, bad: map[string]bool{}, given: map[string]bool{}, said: map[string]bool{}}
}

func (p *parser) mark(path string, line int) {
	if _, ok := p.lines[path]; !ok {
		p.lines[path] = line
	}
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
	e := &ConfigError{Line: line, Field: field, Err: err}
	if p.said[e.Error()] {
		return // one problem found by several checks
	}
	p.said[e.Error()] = true
	p.errs = append(p.errs, e)
}

// fail records a value that could not be read (it is then not validated again).
func (p *parser) fail(line int, field string, err error) {
	p.bad[field] = true
	p.add(line, field, err)
}

// invalid records a validation problem unless field was already refused.
func (p *parser) invalid(field string, format string, args ...any) {
	for f := field; f != ""; f = f[:max(strings.LastIndexAny(f, ".["), 0)] {
		if p.bad[f] {
			return
		}
	}
	if _, inFile := p.lines[field+"_file"]; inFile {
		field += "_file" // the value came from that file
	}
	p.add(p.lineOf(field), field, fmt.Errorf(format, args...))
}

// sorted orders problems by line, those without a line last.
func (p *parser) sorted(errs ConfigErrors) ConfigErrors {
	out := slices.Clone(errs)
	slices.SortStableFunc(out, func(a, b *ConfigError) int {
		if a.Line == 0 || b.Line == 0 {
			return cmp.Compare(b.Line, a.Line)
		}
		return cmp.Compare(a.Line, b.Line)
	})
	return out
}

// Redacted returns a deep copy of c with every secret (a field tagged
// `secret`) replaced by "REDACTED", safe to log.
func (c *Config) Redacted() *Config {
	r := new(Config)
	redact(reflect.ValueOf(r).Elem(), reflect.ValueOf(c).Elem())
	return r
}

func redact(dst, src reflect.Value) {
	switch src.Kind() {
	case reflect.Struct:
		for i := range src.NumField() {
			if _, secret := src.Type().Field(i).Tag.Lookup("secret"); secret && !src.Field(i).IsZero() {
				dst.Field(i).SetString("REDACTED")
			} else {
				redact(dst.Field(i), src.Field(i))
			}
		}
	case reflect.Slice, reflect.Pointer:
		if src.IsNil() {
			return
		}
		if src.Kind() == reflect.Pointer {
			dst.Set(reflect.New(src.Type().Elem()))
			redact(dst.Elem(), src.Elem())
			return
		}
		dst.Set(reflect.MakeSlice(src.Type(), src.Len(), src.Len()))
		for i := range src.Len() {
			redact(dst.Index(i), src.Index(i))
		}
	default:
		dst.Set(src)
	}
}
