package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"wittra-gateway/internal/wmsg"
)

// soakSub counts this run's data messages on one broker.
type soakSub struct {
	name    string
	run     []byte
	seen    *seenSet
	t0      time.Time
	onTopic string

	received, unique, dups, retained, foreign atomic.Uint64
	connLost                                  atomic.Uint64
}

func newSoakSub(name, run string, n uint64, t0 time.Time) *soakSub {
	return &soakSub{name: name, run: []byte(run), seen: newSeenSet(n), t0: t0, onTopic: "wittra/soak/+/data"}
}

func (s *soakSub) onMessage(_ paho.Client, m paho.Message) {
	p, err := wmsg.Parse(m.Payload())
	if err != nil || !bytes.Equal(p.Run, s.run) {
		s.foreign.Add(1)
		return
	}
	// A retained copy served on subscribe is an old value, not a delivery
	// (and on the embedded broker the live one was counted, or the
	// subscriber was away): not counted either way.
	if m.Retained() {
		s.retained.Add(1)
		return
	}
	first, ok := s.seen.mark(p.Seq)
	if !ok {
		s.foreign.Add(1)
		return
	}
	s.received.Add(1)
	if first {
		s.unique.Add(1)
	} else {
		s.dups.Add(1)
	}
}

// connectPersistent subscribes to mosquitto with a persistent session at
// QoS 1: mosquitto queues for it while it is away, and (with persistence)
// across mosquitto's own restarts. It resubscribes on every connect, in
// case a session was lost.
func (s *soakSub) connectPersistent(url string) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker(url).SetClientID("soak-" + string(s.run)).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetMaxReconnectInterval(time.Second).SetConnectTimeout(5 * time.Second).
		SetOrderMatters(true).
		SetConnectionLostHandler(func(paho.Client, error) { s.connLost.Add(1) }).
		SetOnConnectHandler(func(c paho.Client) {
			// Not waited for here: the handler runs on paho's connect path.
			c.Subscribe(s.onTopic, 1, s.onMessage)
		})
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("%s: connect %s: %v", s.name, url, tok.Error())
	}
	return c, nil
}

// window is one stay of the embedded-broker subscriber.
type window struct{ from, to time.Time }

// comeAndGo connects an ordinary (clean session) subscriber to the embedded
// broker for on, leaves for off, and so on until ctx ends; it records the
// windows in which it was subscribed.
func (s *soakSub) comeAndGo(ctx context.Context, addr func() string, on, off time.Duration, mu *sync.Mutex, windows *[]window) {
	for ctx.Err() == nil {
		lost := make(chan struct{})
		var once sync.Once
		opts := paho.NewClientOptions().AddBroker("tcp://" + addr()).SetClientID(fmt.Sprintf("soak-embedded-%d", time.Now().UnixNano())).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
			SetOrderMatters(true).
			SetConnectionLostHandler(func(paho.Client, error) { s.connLost.Add(1); once.Do(func() { close(lost) }) })
		c := paho.NewClient(opts)
		if tok := c.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
			tok := c.Subscribe(s.onTopic, 1, s.onMessage)
			if tok.WaitTimeout(20*time.Second) && tok.Error() == nil {
				from := time.Now()
				select {
				case <-ctx.Done():
				case <-lost:
				case <-time.After(on):
				}
				to := time.Now()
				c.Disconnect(100)
				mu.Lock()
				*windows = append(*windows, window{from, to})
				mu.Unlock()
			} else {
				c.Disconnect(0)
			}
		} else {
			c.Disconnect(0)
		}
		select {
		case <-ctx.Done():
		case <-time.After(off):
		}
	}
}
