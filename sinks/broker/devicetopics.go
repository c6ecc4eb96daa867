package broker

import (
	"fmt"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
)

// haRun is the Home Assistant side of a sink: the inline subscription to
// <discovery prefix>/status and the goroutine republishing the configs.
type haRun struct {
	stop   chan struct{}
	done   sync.WaitGroup
	filter string
	subID  int
}

// inlineSubIDs numbers the broker's inline subscriptions (mochi keys them
// by filter and id).
var inlineSubIDs atomic.Int64

// startDeviceTopics sets up the layout of s: its topics and retain flags
// and, if configured, the state topic and Home Assistant discovery. Discovery configs are kept in the compact retained
// store with the sink's caps but no ageing: each is published once per
// entity, and Home Assistant must find it after any silence.
func (s *Sink) startDeviceTopics() error {
	l, err := devicetopics.NewLayout(s.cfg.Devices, s.cfg.TopicPrefix, s.cfg.GatewayID, s.cfg.Values, s.cfg.Retain, s.log)
	if err != nil {
		return err
	}
	s.layout = l
	t := l.Topics
	if t == nil {
		return nil
	}
	prefix := t.DiscoveryPrefix()
	if prefix == "" {
		return nil
	}
	keep := s.cfg.RetainPolicy
	keep.keep = true
	s.srv.ownRetained(prefix, keep)
	s.ha = haRun{stop: make(chan struct{}), filter: t.StatusTopic(), subID: int(inlineSubIDs.Add(1))}
	err = s.srv.mochi.Subscribe(s.ha.filter, s.ha.subID, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		t.Online(pk.Payload) // never blocks: mochi calls this on the publisher's goroutine
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", s.ha.filter, err)
	}
	s.ha.done.Add(1)
	go func() {
		defer s.ha.done.Done()
		t.Republish(s.ha.stop, func(p sinks.Publication) error {
			return s.srv.publish(p.Topic, p.Payload, true, publishQoS)
		})
	}()
	return nil
}

// stopDeviceTopics ends the Home Assistant subscription and republisher.
func (s *Sink) stopDeviceTopics() {
	if s.ha.stop == nil {
		return
	}
	_ = s.srv.mochi.Unsubscribe(s.ha.filter, s.ha.subID)
	close(s.ha.stop)
	s.ha.done.Wait()
	s.ha.stop = nil
}
