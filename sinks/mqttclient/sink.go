package mqttclient

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/mqttpub"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
)

// Errors a Publish or Close can wrap.
var (
	ErrClosed         = mqttpub.ErrClosed
	ErrConnectionLost = mqttpub.ErrConnectionLost
	ErrAckTimeout     = mqttpub.ErrAckTimeout
)

// closeWait bounds how long Close waits for the broker to acknowledge the
// retained "offline" status.
const closeWait = 2 * time.Second

// Sink publishes messages to an external MQTT broker (see the package doc
// for what counts as delivered). The connection, its numbering and the
// window of publications in flight belong to mqttpub; the sink adds the
// topic layout and the retained online/offline status.
type Sink struct {
	cfg    Config
	pub    *mqttpub.Publisher
	status string // status topic
	log    zerolog.Logger

	layout *devicetopics.Layout         // topics, retain flags, state and discovery; used by Publish from one goroutine
	conn   atomic.Pointer[mqttpub.Conn] // the connection OnConnect saw last (discovery republication)
	ctx    context.Context              // ended by Close: stops the republisher and its publications
	cancel context.CancelFunc
	bg     sync.WaitGroup
}

var _ sinks.Sink = (*Sink)(nil)

// New validates cfg, loads the TLS files and starts connecting in the
// background: a broker that is down at start is normal, and New never
// waits for the network. The connection is retried until Close.
func New(cfg Config, log zerolog.Logger) (*Sink, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("mqtt sink %s: %w", cfg.Name, err)
	}
	broker, secure, err := parseBrokerURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("mqtt sink %s: url %q: %w", cfg.Name, cfg.URL, err)
	}
	o := mqttpub.Options{
		Peer: "broker", URL: broker,
		ClientID: cfg.ClientID, Username: cfg.Username, Password: cfg.Password,
		QoS: cfg.QoS, Window: cfg.Window, AckTimeout: cfg.AckTimeout,
		RetryInterval: connectRetryInterval, MaxRetryInterval: cfg.MaxReconnectInterval,
		ConnectTimeout: connectTimeout, KeepAlive: keepAlive,
	}
	switch {
	case secure:
		if o.TLS, err = cfg.TLS.Client(); err != nil {
			return nil, fmt.Errorf("mqtt sink %s: %w", cfg.Name, err)
		}
	case !cfg.TLS.IsZero():
		return nil, fmt.Errorf("mqtt sink %s: tls settings need an ssl:// or wss:// url, not %s://", cfg.Name, broker.Scheme)
	}
	s := &Sink{
		cfg:    cfg,
		status: sinks.StatusTopic(cfg.TopicPrefix, cfg.GatewayID),
		log:    log.With().Str("component", "mqttclient").Str("sink", cfg.Name).Logger(),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// before the publisher: its connect hook subscribes for discovery
	if s.layout, err = devicetopics.NewLayout(cfg.Devices, cfg.TopicPrefix, cfg.GatewayID, cfg.Values, cfg.Retain, s.log); err != nil {
		s.cancel()
		return nil, fmt.Errorf("mqtt sink %s: %w", cfg.Name, err)
	}
	o.Will = &mqttpub.Message{Topic: s.status, QoS: statusQoS, Retain: true, Payload: []byte("offline")}
	o.OnConnect = s.announce
	if s.pub, err = mqttpub.New(o, s.log); err != nil {
		s.cancel()
		return nil, fmt.Errorf("mqtt sink %s: %w", cfg.Name, err)
	}
	s.startRepublisher()
	return s, nil
}

// announce publishes the retained "online" status on a fresh connection,
// before any data; a connection that does not acknowledge it is dropped.
// With Home Assistant discovery it also subscribes to Home Assistant's
// status (each connection is a new clean session).
func (s *Sink) announce(ctx context.Context, c *mqttpub.Conn) error {
	if err := c.Publish(ctx, mqttpub.Message{Topic: s.status, QoS: statusQoS, Retain: true, Payload: []byte("online")}); err != nil {
		return err
	}
	s.conn.Store(c)
	return s.subscribeHomeAssistant(ctx, c)
}

// Name returns the sink's name.
func (s *Sink) Name() string { return s.cfg.Name }

// Connected reports whether the sink has a connection to the broker now.
func (s *Sink) Connected() bool { return s.pub.Connected() }

// LinkState reports the connection for the status page.
func (s *Sink) LinkState() sinks.LinkState { return s.pub.LinkState() }

var _ sinks.Linked = (*Sink)(nil)

// Publish sends msgs in order and returns how many of them, from the
// start, are proven delivered (see the package doc). It first waits for a
// connection; if ctx ends while waiting it returns 0 and an error wrapping
// ctx.Err(). When fewer than all are delivered the error says why:
// ErrConnectionLost, ErrAckTimeout, a paho error, ErrClosed or ctx.Err().
func (s *Sink) Publish(ctx context.Context, msgs []sinks.Message) (n int, err error) {
	defer func() {
		if err != nil {
			s.layout.Topics.Undelivered(msgs[n:])
		}
	}()
	if len(msgs) == 0 {
		return 0, nil
	}
	b, err := s.pub.Begin(ctx, 0)
	if err != nil {
		return 0, err
	}
	defer b.End()
	defer s.layout.Release() // don't pin message bodies
	for i, m := range msgs {
		if err := ctx.Err(); err != nil {
			return b.Delivered(), err
		}
		pubs := s.layout.Publications(m)
		for j, p := range pubs {
			if err := b.Send(p, i, j == len(pubs)-1); err != nil {
				return b.Delivered(), err
			}
		}
	}
	if err := b.Flush(); err != nil {
		return b.Delivered(), err
	}
	return len(msgs), nil
}

// SeedRetained tells the retained-value guard about messages published
// before a restart (sinks.RetainSeeder).
func (s *Sink) SeedRetained(msgs []sinks.Message) {
	s.layout.Seed(msgs)
}

var _ sinks.RetainSeeder = (*Sink)(nil)

// Close publishes the retained "offline" status if connected, waiting
// briefly for the broker to acknowledge it, and disconnects. After it,
// Publish returns ErrClosed; a second Close does nothing.
func (s *Sink) Close(ctx context.Context) error {
	s.cancel()
	s.bg.Wait()
	err := s.pub.Close(ctx, func(ctx context.Context, c *mqttpub.Conn) error {
		ctx, cancel := context.WithTimeout(ctx, closeWait)
		defer cancel()
		return c.Publish(ctx, mqttpub.Message{Topic: s.status, QoS: statusQoS, Retain: true, Payload: []byte("offline")})
	})
	if err != nil {
		return fmt.Errorf("close mqtt sink %s: %w", s.cfg.Name, err)
	}
	return nil
}
