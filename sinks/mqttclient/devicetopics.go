package mqttclient

import (
	"context"
	"errors"
	"fmt"

	"wittra-gateway/internal/mqttpub"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
)

// errNotConnected ends a republication of discovery configs while the
// sink has no connection (Home Assistant announces itself again when it
// reconnects).
var errNotConnected = errors.New("not connected")

// newDeviceTopics sets up the state topic and Home Assistant discovery of
// s, if configured (before the publisher: its connect hook subscribes).
func (s *Sink) newDeviceTopics() error {
	o := s.cfg.Devices
	o.TopicPrefix, o.GatewayID, o.Values = s.cfg.TopicPrefix, s.cfg.GatewayID, s.cfg.Values
	t, err := devicetopics.New(o, s.log)
	s.topics = t
	return err
}

// startRepublisher starts the goroutine that republishes the discovery
// configs when Home Assistant comes online (after the publisher exists).
func (s *Sink) startRepublisher() {
	if s.topics.StatusTopic() == "" {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.topics.Republish(s.ctx.Done(), s.publishConfig)
	}()
}

// subscribeHomeAssistant subscribes connection c to Home Assistant's
// status topic. A refusal is logged, not fatal: configs are then published
// only when devices are first seen.
func (s *Sink) subscribeHomeAssistant(ctx context.Context, c *mqttpub.Conn) error {
	topic := s.topics.StatusTopic()
	if topic == "" {
		return nil
	}
	err := c.Subscribe(ctx, topic, 1, func(_ string, payload []byte) { s.topics.Online(payload) })
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
