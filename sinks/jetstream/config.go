package jetstream

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"wittra-gateway/internal/field"
	"wittra-gateway/internal/tlsfiles"
)

// Defaults used when a Config field is zero.
const (
	DefaultName          = "jetstream"
	DefaultSubjectPrefix = "wittra"
	DefaultStream        = "WITTRA"
	// DefaultMaxAge keeps a week, like the gateway's own queue: the stream
	// is a transport to the consumers' databases, not an archive.
	DefaultMaxAge = 168 * time.Hour
	// DefaultDuplicateWindow covers a crash and restart of the gateway
	// (seconds under systemd) with a wide margin. The servers hold every
	// message id of the window in memory: see the README for sizing.
	DefaultDuplicateWindow = 10 * time.Minute
	DefaultWindow          = 256
	DefaultAckTimeout      = 5 * time.Second
)

// Connection settings that are not configurable.
const (
	connectTimeout  = 5 * time.Second
	reconnectWait   = time.Second
	maxReconnectGap = 30 * time.Second
	pingInterval    = 10 * time.Second // with maxPingsOut, a dead connection is noticed within ~30 s
	maxPingsOut     = 2
	apiTimeout      = 5 * time.Second // stream lookup and creation
)

// Config configures a `type: jetstream` sink.
type Config struct {
	Name      string   // sink name in logs and errors; default DefaultName
	URLs      []string // nats://, tls://, ws:// or wss:// servers of one cluster; at least one
	Username  string   // with Password; empty: no user
	Password  string   // secret, never logged
	Token     string   // secret, never logged; instead of a user
	CredsFile string   // NATS .creds file (JWT and NKey seed); instead of a user or token
	TLS       TLSConfig
	// SubjectPrefix starts every subject: one or more NATS tokens
	// separated by dots (e.g. "wittra" or "wittra.site-a"); default
	// DefaultSubjectPrefix.
	SubjectPrefix string
	GatewayID     string // names the connection and the gateway's own message ids; required
	Stream        StreamConfig
	Window        int           // max publications awaiting their acknowledgement; default DefaultWindow
	AckTimeout    time.Duration // max wait for one acknowledgement; default DefaultAckTimeout
}

// StreamConfig is the stream the sink publishes into. The sink creates it
// with these settings when it does not exist; an existing stream is used
// as it is (its settings are logged, never changed).
type StreamConfig struct {
	Name     string   // default DefaultStream
	Subjects []string // default [SubjectPrefix + ".>"]
	// Replicas of a created stream, 1 to 5. Zero: 3 when the servers form
	// a cluster of 3 or more, else 1 (see the package doc).
	Replicas        int
	MaxAge          time.Duration // default DefaultMaxAge
	DuplicateWindow time.Duration // default DefaultDuplicateWindow; at most MaxAge
}

// TLSConfig is the client side of TLS.
type TLSConfig = tlsfiles.Config

// withDefaults fills the zero fields of a stream for subject prefix.
func (st StreamConfig) withDefaults(prefix string) StreamConfig {
	if prefix == "" {
		prefix = DefaultSubjectPrefix
	}
	if st.Name == "" {
		st.Name = DefaultStream
	}
	if len(st.Subjects) == 0 {
		st.Subjects = []string{prefix + ".>"}
	}
	if st.MaxAge == 0 {
		st.MaxAge = DefaultMaxAge
	}
	if st.DuplicateWindow == 0 {
		st.DuplicateWindow = min(DefaultDuplicateWindow, st.MaxAge)
	}
	return st
}

// WithDefaults returns st with its zero fields filled as the sink fills
// them for subject prefix.
func (st StreamConfig) WithDefaults(prefix string) StreamConfig { return st.withDefaults(prefix) }

// withDefaults returns cfg with zero fields defaulted, or every problem
// Validate finds.
func (cfg Config) withDefaults() (Config, error) {
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	cfg.Stream = cfg.Stream.withDefaults(cfg.SubjectPrefix)
	cfg.Name = cmp.Or(cfg.Name, DefaultName)
	cfg.SubjectPrefix = cmp.Or(cfg.SubjectPrefix, DefaultSubjectPrefix)
	cfg.Window = cmp.Or(cfg.Window, DefaultWindow)
	cfg.AckTimeout = cmp.Or(cfg.AckTimeout, DefaultAckTimeout)
	return cfg, nil
}

// Validate reports every problem of cfg, zero fields standing for their
// defaults. Each is a *field.Error naming the key of a `type: jetstream`
// sink in the config file.
func (cfg Config) Validate() error {
	var errs field.List
	prefix := cmp.Or(cfg.SubjectPrefix, DefaultSubjectPrefix)
	st := cfg.Stream.withDefaults(prefix)
	if len(cfg.URLs) == 0 {
		errs.Add("urls", "required for type jetstream: at least one server (nats://, tls://, ws:// or wss:// URL)")
	}
	for i, u := range cfg.URLs {
		if err := CheckURL(u); err != nil {
			errs.Add(fmt.Sprintf("urls[%d]", i), "%v", err)
		}
	}
	switch {
	case countSet(cfg.Username, cfg.Token, cfg.CredsFile) > 1:
		errs.Add("", "set one of username/password, token or creds_file")
	case cfg.Password != "" && cfg.Username == "":
		errs.Add("username", "required with password")
	}
	if cfg.GatewayID == "" {
		errs.Add("/gateway.id", "required")
	}
	if cfg.Window < 0 || cfg.Window > 65535 {
		errs.Add("", "window %d: must be between 1 and 65535", cfg.Window)
	}
	if cfg.AckTimeout < 0 {
		errs.Add("", "ack timeout %v: must not be negative", cfg.AckTimeout)
	}
	if err := CheckSubjectPrefix(prefix); err != nil {
		errs.Add("subject_prefix", "%v", err)
		return errs.Err() // the stream's subjects cannot be judged
	}
	if err := CheckStreamName(st.Name); err != nil {
		errs.Add("stream.name", "%v", err)
	}
	covered := false
	for i, f := range st.Subjects {
		if err := CheckFilter(f); err != nil {
			errs.Add(fmt.Sprintf("stream.subjects[%d]", i), "%v", err)
		}
		covered = covered || Covers(f, prefix)
	}
	if !covered {
		errs.Add("stream.subjects", "must capture %s.> (the subjects the sink publishes)", prefix)
	}
	if st.Replicas < 0 || st.Replicas > 5 { // JetStream's own limit
		errs.Add("stream.replicas", "must be between 1 and 5 (or absent: 3 on a cluster of 3 or more, else 1)")
	}
	switch {
	case st.MaxAge < 0:
		errs.Add("stream.max_age", "must not be negative")
	case st.DuplicateWindow < 0:
		errs.Add("stream.duplicate_window", "must not be negative")
	case st.DuplicateWindow > st.MaxAge:
		errs.Add("stream.duplicate_window", "must not exceed max_age (%v)", st.MaxAge)
	}
	return errs.Err()
}

func countSet(ss ...string) int {
	n := 0
	for _, s := range ss {
		if s != "" {
			n++
		}
	}
	return n
}

// CheckURL checks one server URL without quoting it. Credentials in it
// are refused so that they never reach a log line.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL")
	}
	switch {
	case u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss":
		return errors.New("must start with nats://, tls://, ws:// or wss://")
	case u.User != nil:
		return errors.New("must not contain credentials: use username and password, token or creds_file")
	case u.Hostname() == "":
		return errors.New("must name a host")
	}
	return nil
}

// CheckSubjectPrefix reports whether p can start a subject: one or more
// dot-separated tokens, none empty, none a wildcard, no whitespace.
func CheckSubjectPrefix(p string) error {
	if p == "" {
		return errors.New("empty")
	}
	for _, tok := range strings.Split(p, ".") {
		switch {
		case tok == "":
			return errors.New("has an empty token (leading, trailing or double dot)")
		case tok == "*" || tok == ">":
			return errors.New("must not contain wildcards")
		case strings.ContainsAny(tok, " \t\r\n\f\x00"):
			return errors.New("must not contain whitespace or NUL")
		}
	}
	return nil
}

// CheckStreamName applies JetStream's rules for stream names.
func CheckStreamName(n string) error {
	switch {
	case n == "":
		return errors.New("empty")
	case len(n) > 255:
		return errors.New("longer than 255 bytes")
	case strings.ContainsAny(n, ".*> \t\r\n\f\x00/\\"):
		return errors.New("must not contain . * > / \\ or whitespace")
	}
	return nil
}

// CheckFilter checks a stream subject, which may hold wildcards.
func CheckFilter(f string) error {
	if f == "" {
		return errors.New("empty")
	}
	toks := strings.Split(f, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return errors.New("has an empty token")
		case tok == ">" && i != len(toks)-1:
			return errors.New("> must be the last token")
		case strings.ContainsAny(tok, " \t\r\n\f\x00"):
			return errors.New("must not contain whitespace or NUL")
		}
	}
	return nil
}

// Covers reports whether the subject filter f captures every subject the
// sink publishes under prefix: prefix plus exactly three more tokens
// (project, device, data|event).
func Covers(f, prefix string) bool {
	want := append(strings.Split(prefix, "."), "*", "*", "*")
	ft := strings.Split(f, ".")
	for i, w := range want {
		if i >= len(ft) {
			return false
		}
		switch ft[i] {
		case ">":
			return true
		case "*":
			continue
		default:
			if w == "*" || ft[i] != w {
				return false
			}
		}
	}
	return len(ft) == len(want)
}
