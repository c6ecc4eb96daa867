package mqttclient

import (
	"context"
	"errors"
	"fmt"

	"wittra-gateway/internal/mqttpub"
	"wittra-gateway/sinks"
)

// errNotConnected ends a republication of discovery configs while the
// sink has no connection (Home Assistant announces itself again when it
// reconnects).
var errNotConnected = errors.New("not connected")

// startRepublisher starts the goroutine that republishes the discovery
// configs when Home Assistant comes online (after the publisher exists).
func (s *Sink) startRepublisher() {
	if s.layout.Topics.StatusTopic() == "" {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.layout.Topics.Republish(s.ctx.Done(), s.publishConfig)
	}()
}

// subscribeHomeAssistant subscribes connection c to Home Assistant's
// status topic. A refusal is logged, not fatal: configs are then published
// only when devices are first seen.
func (s *Sink) subscribeHomeAssistant(ctx context.Context, c *mqttpub.Conn) error {
	topic := s.layout.Topics.StatusTopic()
	if topic == "" {
		return nil
	}
	err := c.Subscribe(ctx, topic, 1, func(_ string, payload []byte) { s.layout.Topics.Online(payload) })
	if err != nil && ctx.Err() == nil {
		s.log.Warn().Err(err).Str("topic", topic).Msg("cannot subscribe to Home Assistant's status: configs are published only when devices are first seen")
	}
	return ctx.Err()
}

// publishConfig publishes one discovery config, retained, on the latest
// connection and waits for its acknowledgement.
func (s *Sink) publishConfig(p sinks.Publication) error {
	c := s.conn.Load()
	if c == nil || !s.pub.Connected() {
		return errNotConnected
	}
	if err := c.Publish(s.ctx, mqttpub.Message{Topic: p.Topic, QoS: s.cfg.QoS, Retain: true, Payload: p.Payload}); err != nil {
		return fmt.Errorf("publish %s: %w", p.Topic, err)
	}
	return nil
}
