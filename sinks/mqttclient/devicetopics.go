package mqttclient

import (
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
)

// errNotConnected ends a republication of discovery configs while the
// sink has no connection (Home Assistant announces itself again when it
// reconnects).
var errNotConnected = errors.New("not connected")

// startDeviceTopics sets up the state topic and Home Assistant discovery
// of s, if configured, and the goroutine that republishes the configs when
// Home Assistant comes online.
func (s *Sink) startDeviceTopics() error {
	o := s.cfg.Devices
	o.TopicPrefix, o.GatewayID, o.Values = s.cfg.TopicPrefix, s.cfg.GatewayID, s.cfg.Values
	t, err := devicetopics.New(o, s.log)
	if err != nil || t == nil {
		return err
	}
	s.topics = t
	if t.StatusTopic() != "" {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			t.Republish(s.done, s.publishConfig)
		}()
	}
	return nil
}

// subscribeHomeAssistant makes every connection subscribe to Home
// Assistant's status topic once it is up: each connection is a new client
// with a clean session, so the subscription is made again on each.
func (s *Sink) subscribeHomeAssistant(o *paho.ClientOptions) {
	topic := s.topics.StatusTopic()
	if topic == "" {
		return
	}
	o.SetOnConnectHandler(func(c paho.Client) { // runs on its own goroutine
		tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { s.topics.Online(m.Payload()) })
		if !tok.WaitTimeout(s.cfg.AckTimeout) {
			s.log.Warn().Str("topic", topic).Msg("subscription to Home Assistant's status not acknowledged in time")
		} else if err := tok.Error(); err != nil {
			s.log.Warn().Err(err).Str("topic", topic).Msg("cannot subscribe to Home Assistant's status: configs are published only when devices are first seen")
		}
	})
}

// publishConfig publishes one discovery config, retained, on the current
// connection and waits for its acknowledgement.
func (s *Sink) publishConfig(p sinks.Publication) error {
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c == nil || !c.IsConnectionOpen() {
		return errNotConnected
	}
	tok := c.Publish(p.Topic, s.cfg.QoS, true, p.Payload)
	t := time.NewTimer(s.cfg.AckTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("publish %s: %w", p.Topic, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("publish %s: %w", p.Topic, ErrAckTimeout)
	case <-s.done:
		return ErrClosed
	}
}
