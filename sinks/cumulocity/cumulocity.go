// Package cumulocity is the Cumulocity IoT output of the gateway (docs/contract.md#cumulocity):
// the gateway is a Cumulocity device (external id = gateway id) and every
// Wittra device becomes its child device (external id = the Wittra device
// id), registered before its first data; Wittra values become measurements,
// events and locations of those children (see mapping.go for the table).
//
// Two modes:
//
//   - mqtt: SmartREST 2.0 static templates over MQTT (paho), QoS 1, clean
//     session, client id = gateway id. A message counts as delivered only
//     when every one of its publishes got its PUBACK on the connection it
//     was sent on (see mqtt.go for how that is proven despite paho's
//     reconnect behaviour).
//   - rest: the REST API (identity, inventory, measurementCollection,
//     events), delivered on HTTP 2xx.
//
// Login: "<tenant>/<user>" and password, or a device certificate (X.509)
// without a password (see certauth.go).
//
// Children registered (and, in REST mode, managed object ids) are kept in
// State so a restart does not register them again.
//
// Errors: a message Cumulocity refuses as invalid (REST 400, 413, 422), or
// that maps to nothing Cumulocity can take, is reported with an error
// wrapping sinks.ErrPermanent so the forwarder dead-letters it; everything
// else (connection loss, timeouts, 401, 403, 404, 429, 5xx) is transient and
// retried.
package cumulocity

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/certreload"
	"wittra-gateway/internal/tlsfiles"
	"wittra-gateway/sinks"
)

// Modes.
const (
	ModeMQTT = "mqtt"
	ModeREST = "rest"
)

// DefaultRequestTimeout bounds one REST request or one wait for a PUBACK.
const DefaultRequestTimeout = 30 * time.Second

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("cumulocity sink closed")

// State is durable key-value storage for the sink (satisfied by
// *buffer.KV).
type State interface {
	Get(key string) ([]byte, error)
	Put(ctx context.Context, key string, value []byte) error
}

// maxCachedDevices bounds the in-memory caches of what State holds per
// device (registered children, managed object ids): a site's devices fit,
// and device churn cannot grow them without end. A miss costs a State read.
const maxCachedDevices = 10000

// TLSConfig is the client TLS setup.
// CertFile and KeyFile are the client certificate (optional). They are
// re-read when they change. Without a Password the certificate is the login
// (see certauth.go).
type TLSConfig = tlsfiles.Config

// Config configures a sink.
type Config struct {
	Name string // in logs; default "cumulocity"
	Mode string // ModeMQTT (default) or ModeREST
	// URL of Cumulocity: mqtt mode tcp://host:1883, mqtts:// or ssl://
	// host:8883 (port defaults by scheme); rest mode https://tenant.example.com
	// (http:// allowed, for tests).
	URL string
	// Login "<tenant>/<username>" with Password. All three may be empty
	// when TLS.CertFile is set: the device certificate is then the login.
	Tenant, Username, Password string
	TLS                        TLSConfig
	GatewayID                  string // the gateway's external id (c8y_Serial) and MQTT client id
	DeviceName                 string // default "Wittra gateway <GatewayID>"
	// ClientID overrides the MQTT client id with certificate login only:
	// its device identifier ("d:<id>:<template>" without the parts) must
	// be the certificate's common name, which may then differ from
	// GatewayID (the Cumulocity device is the common name).
	ClientID string
	// TokenURL is the mTLS endpoint that issues device access tokens in
	// rest mode with certificate login; default https://<URL host>:8443.
	TokenURL string
	// State remembers registered children (and REST managed object ids)
	// across restarts; nil keeps them in memory only.
	State          State
	RequestTimeout time.Duration // default DefaultRequestTimeout
	// Directory names child devices (see names.go); nil: "Wittra <id>".
	Directory sinks.Directory

	// Tests shorten paho's retry of a failed first connect (default 5 s).
	connectRetryInterval time.Duration
	// now is the clock for certificate expiry warnings and token expiry
	// (tests inject one); time.Now when nil.
	now func() time.Time
}

// Sink delivers messages to Cumulocity.
type Sink struct {
	cfg    Config
	log    zerolog.Logger
	state  State
	prefix string // State key prefix: mode, host, tenant and gateway

	skipped atomic.Uint64

	mqtt *mqttLink
	rest *restLink

	// Certificate login (nil certs: none). identity is the Cumulocity
	// device the gateway is (GatewayID, or the certificate's common name
	// with ClientID), clientID the MQTT client id.
	certs     *certreload.Reloader
	certLogin bool
	identity  string
	clientID  string
	expiry    expiryWatch

	closeCtx  context.Context // cancelled by Close
	closeNow  context.CancelFunc
	closeOnce sync.Once

	logMu       sync.Mutex
	loggedSkips map[string]bool // skipped field paths already logged

	names childNames // names given to children (names.go)
}

var _ sinks.Sink = (*Sink)(nil)

// New builds a sink. It validates the configuration and reads TLS files but
// never waits for the network: in mqtt mode the connection is made in the
// background (and retried), in rest mode on the first Publish.
func New(cfg Config, log zerolog.Logger) (*Sink, error) {
	if cfg.Name == "" {
		cfg.Name = "cumulocity"
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeMQTT
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.DeviceName == "" {
		cfg.DeviceName = "Wittra gateway " + cfg.GatewayID
	}
	if cfg.connectRetryInterval <= 0 {
		cfg.connectRetryInterval = 5 * time.Second
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cumulocity sink %s: %w", cfg.Name, err)
	}
	certLogin := cfg.TLS.CertFile != "" && cfg.Password == ""
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("cumulocity sink %s: %w", cfg.Name, err)
	}
	s := &Sink{
		cfg:         cfg,
		log:         log.With().Str("component", "cumulocity").Str("sink", cfg.Name).Str("mode", cfg.Mode).Logger(),
		state:       cfg.State,
		certLogin:   certLogin,
		identity:    cfg.GatewayID,
		clientID:    cfg.GatewayID,
		loggedSkips: map[string]bool{},
	}
	tlsCfg, err := s.buildTLS(u)
	if err != nil {
		return nil, fmt.Errorf("cumulocity sink %s: %w", cfg.Name, err)
	}
	s.prefix = cfg.Mode + "|" + u.Host + "|" + cfg.Tenant + "|" + s.identity + "|"
	s.closeCtx, s.closeNow = context.WithCancel(context.Background())
	if s.state == nil {
		s.state = newMemState()
	}
	if s.certs != nil {
		s.checkExpiry() // at start, so a certificate near its end is logged at once
		go s.watchExpiry()
	}
	if err == nil {
		if cfg.Mode == ModeMQTT {
			s.mqtt, err = newMQTTLink(s, tlsCfg)
		} else {
			s.rest, err = newRESTLink(s, u, tlsCfg)
		}
	}
	if err != nil {
		s.closeNow()
		return nil, fmt.Errorf("cumulocity sink %s: %w", cfg.Name, err)
	}
	return s, nil
}

// Name returns the sink's name.
func (s *Sink) Name() string { return s.cfg.Name }

// Skipped returns how many Wittra fields the mapper left out of delivered
// messages because Cumulocity cannot store them as values (non-numeric
// fields, neighbor lists, numbers beyond float64).
func (s *Sink) Skipped() uint64 { return s.skipped.Load() }

// Publish delivers msgs in order and returns how many leading messages are
// proven delivered. When fewer than all, the error says why; it wraps
// sinks.ErrPermanent when msgs[n] itself is refused for good.
func (s *Sink) Publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	if s.closeCtx.Err() != nil {
		return 0, ErrClosed
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	if s.mqtt != nil {
		return s.mqtt.publish(ctx, msgs)
	}
	return s.rest.publish(ctx, msgs)
}

// Close disconnects; Publish fails with ErrClosed afterwards. It is a no-op
// the second time.
func (s *Sink) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.closeNow()
		if s.mqtt != nil {
			s.mqtt.close(ctx)
		}
		if s.rest != nil {
			s.rest.close()
		}
	})
	return nil
}

// delivered records what the mapper skipped in messages now delivered, and
// logs each skipped field path once (bounded).
func (s *Sink) delivered(maps []mapped) {
	for _, m := range maps {
		if len(m.skipped) == 0 {
			continue
		}
		s.skipped.Add(uint64(len(m.skipped)))
		s.logMu.Lock()
		for _, p := range m.skipped {
			if !s.loggedSkips[p] && len(s.loggedSkips) < 256 {
				s.loggedSkips[p] = true
				s.log.Info().Str("field", p).Str("device", m.device).
					Msg("Wittra field not sent to Cumulocity (not a number); counted, logged once per field")
			}
		}
		s.logMu.Unlock()
	}
}

// opCtx bounds one network operation by the request timeout and by Close.
func (s *Sink) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	stop := context.AfterFunc(s.closeCtx, cancel)
	return ctx, func() { stop(); cancel() }
}

// State keys.
func (s *Sink) childKey(device string) string { return s.prefix + "child|" + device }
func (s *Sink) moKey(external string) string  { return s.prefix + "mo|" + external }

// memState is State in memory, for sinks configured without one.
type memState struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMemState() *memState { return &memState{m: map[string][]byte{}} }

func (m *memState) Get(key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.m[key], nil
}

func (m *memState) Put(_ context.Context, key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.m[key] = append([]byte(nil), value...)
	return nil
}
