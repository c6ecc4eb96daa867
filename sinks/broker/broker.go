// Package broker runs the embedded MQTT broker (mochi-mqtt) and the
// `type: broker` sink that publishes queued Wittra messages into it.
//
// The broker authenticates with its own hook (see auth.go), which denies
// what no rule allows: anonymous clients may subscribe (never to $SYS) and
// never publish; users read and write the topics their filters cover (by
// default they read everything but $SYS and publish nothing); nobody but
// the gateway itself may publish under a topic prefix a broker sink uses.
// Passwords may be bcrypt hashes. Listeners can require client
// certificates (mutual TLS), and WebSocket listeners check the Origin of
// browser requests. No HTTP stats or health listener of mochi is opened.
package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"wittra-gateway/internal/tlsfiles"
)

// Listener types accepted in Listener.Type.
const (
	TypeTCP       = "tcp"
	TypeTLS       = "tls"
	TypeWebsocket = "websocket"
)

// Defaults applied to empty Config fields.
const (
	DefaultTCPAddress       = "127.0.0.1:1883"
	DefaultTLSAddress       = "127.0.0.1:8883"
	DefaultWebsocketAddress = "127.0.0.1:8083"

	// DefaultSessionExpiry bounds how long, in seconds, the broker keeps the
	// session of a disconnected persistent client (clean session false, or
	// an MQTT 5 session expiry interval) before dropping it.
	DefaultSessionExpiry = 3600

	// DefaultConnectTimeout is how long a new connection may take to
	// complete a TLS or WebSocket handshake and send its CONNECT.
	DefaultConnectTimeout = 10 * time.Second

	// sysTopicInterval is how often, in seconds, mochi republishes $SYS.
	sysTopicInterval = 10

	// retainSweepInterval is how often retained topics of silent devices
	// are looked for (the sweep costs only what it clears).
	retainSweepInterval = time.Minute
)

var (
	// ErrServerClosed is returned by Server methods after Close.
	ErrServerClosed = errors.New("broker closed")
	// ErrSinkClosed is returned by Sink.Publish after Close.
	ErrSinkClosed = errors.New("broker sink closed")
)

// Config configures the embedded broker. Empty fields fall back to defaults.
type Config struct {
	// Listeners to open; none means one TCP listener on DefaultTCPAddress.
	Listeners []Listener
	// AllowAnonymous lets clients without a username connect. They may
	// subscribe to every topic "#" covers (not $SYS), never publish.
	AllowAnonymous bool
	// Users who may connect with a password.
	Users []User
	// ReservedPrefixes are topic prefixes nobody but the gateway may
	// publish to or under: the topic prefixes of the broker sinks. NewSink
	// reserves its own prefix too, but only once the broker serves; naming
	// them here closes that window.
	ReservedPrefixes []string
	// Subscribers declares the durable subscribers (`type: subscriber`
	// sinks): their client ids are protected and kept out of the ordinary
	// fan-out from the first connection on. NewSubscriber attaches each sink.
	Subscribers []SubscriberConfig

	connectTimeout time.Duration // tests shorten DefaultConnectTimeout

	now func() time.Time // clock of retained ageing and of the refusal log limit; nil = time.Now (tests move it)
}

// Listener is one network listener of the broker.
type Listener struct {
	Type     string // "tcp" (default), "tls" or "websocket"
	Address  string // host:port; empty means the default for the type
	CertFile string // PEM certificate; required for tls, optional for websocket (wss)
	KeyFile  string // PEM private key matching CertFile
	// ClientCAFile, a PEM bundle of CA certificates, makes the listener
	// (tls, or websocket with CertFile) require a client certificate signed
	// by one of them. The client still authenticates as a user or anonymously.
	ClientCAFile string
	// AllowedOrigins (websocket only): when set, a browser request (one with
	// an Origin header) is accepted only if its Origin is one of these
	// ("https://host[:port]", compared case-insensitively). When empty, only
	// same-origin browser requests are accepted. Requests without Origin
	// (MQTT clients that are not browsers) are accepted either way.
	AllowedOrigins []string
}

// User is a broker account.
type User struct {
	Username string
	// Password in plain text, or a bcrypt hash ($2a$, $2b$ or $2y$ prefix).
	Password string
	// Subscribe lists the topic filters the user may read; a subscription
	// must lie within one of them. nil means ["#"]: every topic but $SYS.
	Subscribe []string
	// Publish lets the user publish, to the topics PublishTopics covers
	// (nil means ["#"]), never under a reserved prefix.
	Publish       bool
	PublishTopics []string
}

// Server is the embedded MQTT broker.
type Server struct {
	mochi *mqtt.Server
	auth  *authHook
	subs  *subscriberHook
	lns   []listeners.Listener // in Config order
	log   zerolog.Logger

	started   atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once

	retained  *retainedHook // the gateway's own retained topics (retained.go)
	sweepDone chan struct{} // stops the retained sweep
}

// New builds the broker and binds its listeners; a listener that cannot
// bind makes New fail with an error naming its address. Start serves them.
func New(cfg Config, log zerolog.Logger) (*Server, error) {
	log = log.With().Str("component", "broker").Logger()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}

	auth, err := newAuthHook(cfg.AllowAnonymous, cfg.Users, cfg.ReservedPrefixes, log)
	if err != nil {
		return nil, err
	}
	if cfg.now != nil {
		auth.now = cfg.now
	}

	caps := mqtt.NewDefaultServerCapabilities()
	// 0 = no server-imposed expiry (mochi v2.7.9 server.go minimum(),
	// clearExpiredRetainedMessages, Client.ClearExpiredInflights): retained
	// data, values and status live until replaced. The default (86400)
	// would delete a retained value of a device that reports less than daily.
	caps.MaximumMessageExpiryInterval = 0
	// The default MaxUint32 keeps every disconnected persistent session (and
	// its queued QoS>0 messages) forever; bound it.
	caps.MaximumSessionExpiryInterval = DefaultSessionExpiry

	mochiLog := newMochiHandler(zerolog.NewSlogHandler(log))
	s := &Server{
		auth: auth,
		log:  log,
		mochi: mqtt.New(&mqtt.Options{
			Capabilities:           caps,
			InlineClient:           true,
			Logger:                 slog.New(mochiLog),
			SysTopicResendInterval: sysTopicInterval,
		}),
	}
	if err := s.mochi.AddHook(auth, nil); err != nil {
		return nil, fmt.Errorf("add auth hook: %w", err)
	}
	s.retained = newRetainedHook(s.mochi, auth.OnACLCheck, cfg.now, log)
	s.sweepDone = make(chan struct{})
	if err := s.mochi.AddHook(s.retained, nil); err != nil {
		return nil, fmt.Errorf("add retained hook: %w", err)
	}
	if s.subs, err = newSubscriberHook(s.mochi, cfg.Subscribers, len(cfg.Users) > 0, log); err != nil {
		return nil, err
	}
	mochiLog.quotaDropped = s.subs.drops.add
	if err := s.mochi.AddHook(s.subs, nil); err != nil {
		return nil, fmt.Errorf("add durable subscriber hook: %w", err)
	}

	lcs := cfg.Listeners
	if len(lcs) == 0 {
		lcs = []Listener{{Type: TypeTCP}}
	}
	connectTimeout := cfg.connectTimeout
	if connectTimeout <= 0 {
		connectTimeout = DefaultConnectTimeout
	}
	for i, lc := range lcs {
		l, err := newListener(i, lc, connectTimeout, s.closeListenerClients)
		if err == nil {
			err = s.mochi.AddListener(l)
		}
		if err != nil {
			_ = s.mochi.Close() // releases the listeners bound so far
			return nil, err
		}
		s.lns = append(s.lns, l)
	}
	return s, nil
}

// newListener builds listener number i. It binds in AddListener (Init), so
// bind errors surface there.
func newListener(i int, lc Listener, connectTimeout time.Duration, closeClients listeners.CloseFn) (listeners.Listener, error) {
	typ := lc.Type
	if typ == "" {
		typ = TypeTCP
	}
	addr := lc.Address
	var tlsCfg *tls.Config
	switch typ {
	case TypeTCP:
		if addr == "" {
			addr = DefaultTCPAddress
		}
	case TypeTLS:
		if addr == "" {
			addr = DefaultTLSAddress
		}
	case TypeWebsocket:
		if addr == "" {
			addr = DefaultWebsocketAddress
		}
	}
	if lc.CertFile != "" {
		var err error
		if tlsCfg, err = tlsfiles.Server(lc.CertFile, lc.KeyFile, lc.ClientCAFile); err != nil {
			return nil, fmt.Errorf("broker listener %s %s: %w", typ, addr, err)
		}
	}

	id := fmt.Sprintf("%s-%d", typ, i)
	var l listeners.Listener
	if typ == TypeWebsocket {
		l = newWebsocket(id, addr, tlsCfg, lc.AllowedOrigins)
	} else {
		l = listeners.NewTCP(listeners.Config{ID: id, Address: addr, TLSConfig: tlsCfg})
	}
	return &listener{Listener: l, typ: typ, addr: addr, connectTimeout: connectTimeout, closeClients: closeClients}, nil
}

// listener wraps each mochi listener:
//   - an Init (bind) error names the listener's type and address;
//   - every accepted connection gets a deadline to send CONNECT. mochi sets
//     none before CONNECT (v2.7.9 readConnectionPacket), so a client that
//     connects and stays silent, or stalls a TLS handshake, would hold a
//     goroutine and a client buffer forever. mochi replaces the deadline
//     with the keepalive one once the CONNECT is read;
//   - Close disconnects the listener's clients with closeClients instead
//     of mochi's Server.closeListenerClients, which can deadlock (see
//     Server.closeListenerClients).
type listener struct {
	listeners.Listener
	typ, addr      string
	connectTimeout time.Duration
	closeClients   listeners.CloseFn
}

func (l *listener) Close(closeClients listeners.CloseFn) {
	if l.closeClients != nil {
		closeClients = l.closeClients
	}
	l.Listener.Close(closeClients)
}

func (l *listener) Init(log *slog.Logger) error {
	if err := l.Listener.Init(log); err != nil {
		return fmt.Errorf("broker %s listener %s: %w", l.typ, l.addr, err)
	}
	return nil
}

func (l *listener) Serve(establish listeners.EstablishFn) {
	l.Listener.Serve(func(id string, c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(l.connectTimeout))
		return establish(id, c)
	})
}

// Start serves the listeners; it returns at once (mochi's Serve does not
// block).
func (s *Server) Start() error {
	if s.closed.Load() {
		return ErrServerClosed
	}
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("broker already started")
	}
	if err := s.mochi.Serve(); err != nil {
		return fmt.Errorf("serve broker: %w", err)
	}
	go s.retained.sweepLoop(retainSweepInterval, s.sweepDone)
	for _, l := range s.lns {
		s.log.Debug().Str("listener", l.ID()).Str("address", l.Address()).Msg("broker listening")
	}
	return nil
}

// Addrs returns the bound address of each listener, in Config order (a
// port 0 shows the port the system chose).
func (s *Server) Addrs() []string {
	out := make([]string, len(s.lns))
	for i, l := range s.lns {
		out[i] = l.Address()
	}
	return out
}

// ClientsConnected returns the number of network clients connected now.
func (s *Server) ClientsConnected() int64 {
	return atomic.LoadInt64(&s.mochi.Info.ClientsConnected)
}

// Dropped counts messages the broker dropped for slow or over-quota
// subscribers since start (mochi's MessagesDropped + InflightDropped).
func (s *Server) Dropped() int64 {
	return atomic.LoadInt64(&s.mochi.Info.MessagesDropped) + atomic.LoadInt64(&s.mochi.Info.InflightDropped)
}

// DroppedByClient returns, per client id, the messages the broker dropped
// for it since start (at most 100 clients by name, the rest as "_other").
func (s *Server) DroppedByClient() map[string]uint64 { return s.subs.drops.totals() }

// Close stops the listeners and disconnects every client. It is a no-op the
// second time. Sinks using the server should be closed first so their
// "offline" status is published.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.sweepDone)
		s.subs.drops.close()
		_ = s.mochi.Close() // always nil in v2.7.9
		s.retained.wait()   // retained deliveries end with their clients
	})
	return nil
}

// closeListenerClients disconnects the clients of listener id, as mochi's
// own does on Close. mochi v2.7.9 lists them with Clients.GetByListener,
// which takes the clients' read lock twice (it calls Len under RLock): a
// client connecting or leaving in between queues for the write lock, the
// second RLock waits behind it, and Close hangs for good (mochi-mqtt/server
// issue 488). GetAll takes the lock once.
func (s *Server) closeListenerClients(id string) {
	for _, cl := range s.mochi.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			_ = s.mochi.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// reserve forbids clients to publish to prefix and everything under it.
// Broker sinks call it for their topic prefix.
func (s *Server) reserve(prefix string) { s.auth.reserve(prefix) }

// publish hands one message to the broker through the inline client. qos
// caps what subscribers get (each gets min(its subscription QoS, qos)).
// nil means the broker routed it to every current subscriber's queue and,
// with retain, stored it.
func (s *Server) publish(topic string, payload []byte, retain bool, qos byte) error {
	if s.closed.Load() {
		return ErrServerClosed
	}
	return s.mochi.Publish(topic, payload, retain, qos)
}

// ownRetained keeps the gateway's retained topics under prefix in the
// broker's compact store, bounded by p; pinned topics (the status) are
// exempt from the bounds.
func (s *Server) ownRetained(prefix string, p RetainPolicy, pinned ...string) {
	s.retained.own(prefix, p, pinned...)
}

// RetainedStats reports the gateway's retained topics held and cleared.
func (s *Server) RetainedStats() RetainedStats { return s.retained.stats() }
