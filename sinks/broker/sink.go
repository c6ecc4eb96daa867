package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/field"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
)

// DefaultTopicPrefix is the topic prefix of a sink with none configured.
const DefaultTopicPrefix = "wittra"

// publishQoS caps the QoS subscribers receive the gateway's messages with:
// each subscriber gets min(its subscription QoS, 2).
const publishQoS = 2

// SinkConfig configures a `type: broker` sink.
type SinkConfig struct {
	Name        string // sink name in logs and metrics; default "broker"
	TopicPrefix string // default DefaultTopicPrefix
	Values      bool   // also publish one topic per measured value (docs/contract.md#topics)
	Retain      bool   // publish data, events and values retained
	GatewayID   string // names the status topic sinks.StatusTopic(prefix, id); required
	// RetainPolicy bounds the retained topics under TopicPrefix (age of
	// silent devices, topic and byte caps); zero fields take the defaults.
	RetainPolicy RetainPolicy
	// Devices asks for the state topic and Home Assistant discovery;
	// its TopicPrefix, GatewayID and Values are taken from this config.
	Devices devicetopics.Options
}

// Sink publishes messages into the embedded broker. Delivery is the
// handover to the broker (docs/contract.md#delivery): once mochi has routed a publication to
// the subscribers' queues (and stored it, if retained) it counts.
type Sink struct {
	srv    *Server
	cfg    SinkConfig
	status string
	log    zerolog.Logger

	layout *devicetopics.Layout // topics, retain flags, state and discovery; Publish is not concurrent
	ha     haRun                // Home Assistant status subscription (devicetopics.go)

	mu     sync.Mutex
	closed bool
}

var _ sinks.Sink = (*Sink)(nil)

// NewSink reserves the sink's topic prefix on srv (clients may no longer
// publish under it) and publishes the retained status "online".
func NewSink(srv *Server, cfg SinkConfig, log zerolog.Logger) (*Sink, error) {
	if srv == nil {
		return nil, errors.New("broker sink: no broker")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker sink %s: %w", cfg.Name, err)
	}
	cfg.Name = cmp.Or(cfg.Name, "broker")
	cfg.TopicPrefix = cmp.Or(cfg.TopicPrefix, DefaultTopicPrefix)
	s := &Sink{
		srv:    srv,
		cfg:    cfg,
		status: sinks.StatusTopic(cfg.TopicPrefix, cfg.GatewayID),
		log:    log.With().Str("component", "broker").Str("sink", cfg.Name).Logger(),
	}
	srv.reserve(cfg.TopicPrefix)
	srv.ownRetained(cfg.TopicPrefix, cfg.RetainPolicy, s.status)
	if err := srv.publish(s.status, []byte("online"), true, publishQoS); err != nil {
		return nil, fmt.Errorf("publish %s: %w", s.status, err)
	}
	if err := s.startDeviceTopics(); err != nil {
		return nil, fmt.Errorf("broker sink %s: %w", cfg.Name, err)
	}
	return s, nil
}

// Validate reports every problem of cfg, zero fields standing for their
// defaults. Each is a *field.Error naming the key of a `type: broker` sink
// in the config file.
func (cfg SinkConfig) Validate() error {
	var errs field.List
	if err := sinks.CheckTopicPart(cmp.Or(cfg.TopicPrefix, DefaultTopicPrefix), true); err != nil {
		errs.Add("topic_prefix", "%v", err)
	}
	if err := sinks.CheckTopicPart(cfg.GatewayID, false); err != nil {
		errs.Add("/gateway.id", "%v", err)
	}
	switch p := cfg.RetainPolicy; {
	case p.MaxAge < 0:
		errs.Add("retain_max_age", "must not be negative")
	case p.MaxAge > 0 && p.MaxAge < time.Minute:
		errs.Add("retain_max_age", "must be at least 1m (silent devices are looked for every minute)")
	}
	if n := cfg.RetainPolicy.MaxTopics; n < 0 || n > 0 && n < MinRetainMaxTopics {
		errs.Add("retain_max_topics", "must be at least %d (0 or absent: %d)", MinRetainMaxTopics, DefaultRetainMaxTopics)
	}
	if cfg.RetainPolicy.MaxBytes < 0 {
		errs.Add("retain_max_bytes", "must not be negative")
	}
	return errs.Err()
}

// Name returns the sink's name.
func (s *Sink) Name() string { return s.cfg.Name }

// Publish hands msgs to the broker in order: for each, its /data or /event
// topic and, with Values, one topic per value. It returns how many messages
// were handed over. A message whose values cannot be computed still has its
// data/event publication sent and counts as delivered; the error is logged.
func (s *Sink) Publish(ctx context.Context, msgs []sinks.Message) (n int, err error) {
	defer func() {
		if err != nil {
			s.layout.Topics.Undelivered(msgs[n:])
		}
	}()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, ErrSinkClosed
	}
	for i, m := range msgs {
		if err := ctx.Err(); err != nil {
			return i, err
		}
		for _, p := range s.layout.Publications(m) {
			if err := s.srv.publish(p.Topic, p.Payload, p.Retain, publishQoS); err != nil {
				s.layout.Release() // don't pin message bodies
				return i, fmt.Errorf("publish %s: %w", p.Topic, err)
			}
		}
	}
	s.layout.Release()
	return len(msgs), nil
}

// SeedRetained tells the retained-value guard about messages published
// before a restart (sinks.RetainSeeder).
func (s *Sink) SeedRetained(msgs []sinks.Message) {
	s.layout.Seed(msgs)
}

var _ sinks.RetainSeeder = (*Sink)(nil)

// Close publishes the retained status "offline". It leaves the Server
// running (several sinks may share it) and is a no-op the second time.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.stopDeviceTopics()
	if err := s.srv.publish(s.status, []byte("offline"), true, publishQoS); err != nil {
		return fmt.Errorf("publish %s: %w", s.status, err)
	}
	return nil
}
