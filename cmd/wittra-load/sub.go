package main

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"wittra-gateway/internal/wmsg"
)

// subscriber counts this run's messages on the output broker and their
// end-to-end latency (send time embedded in the body → arrival here).
type subscriber struct {
	run      []byte
	accepted bitset // sequences the webhook answered 200 for (shared with the senders)
	seen     bitset

	client paho.Client

	mu        sync.Mutex
	e2e       hist
	received  atomic.Uint64 // our messages, duplicates included
	unique    atomic.Uint64
	dups      atomic.Uint64
	foreign   atomic.Uint64 // other runs, retained leftovers, unparsable
	outside   atomic.Uint64 // our run but a sequence beyond the bitset
	lostConns atomic.Uint64
	last      atomic.Int64 // Unix ns of the last receipt of ours
}

func startSubscriber(brokerURL, topic string, qos byte, run, clientID string, accepted bitset) (*subscriber, error) {
	s := &subscriber{run: []byte(run), accepted: accepted, seen: newBitset(accepted.size())}
	if clientID == "" {
		clientID = "wittra-load-" + run
	}
	opts := paho.NewClientOptions().
		AddBroker(brokerURL).
		SetClientID(clientID).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(time.Second).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		// The handler is quick and never publishes, so it may run in
		// paho's router goroutine, in order, without a goroutine per message.
		SetOrderMatters(true).
		SetConnectionLostHandler(func(paho.Client, error) { s.lostConns.Add(1) })
	s.client = paho.NewClient(opts)
	tok := s.client.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.client.Disconnect(0)
		return nil, fmt.Errorf("subscriber connect %s: %v", brokerURL, errOrTimeout(tok))
	}
	tok = s.client.Subscribe(topic, qos, s.onMessage)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.client.Disconnect(0)
		return nil, fmt.Errorf("subscribe %s: %v", topic, errOrTimeout(tok))
	}
	return s, nil
}

func errOrTimeout(t paho.Token) error {
	if err := t.Error(); err != nil {
		return err
	}
	return fmt.Errorf("timed out")
}

func (s *subscriber) onMessage(_ paho.Client, m paho.Message) {
	now := time.Now()
	p, err := wmsg.Parse(m.Payload())
	if err != nil || !bytes.Equal(p.Run, s.run) {
		s.foreign.Add(1)
		return
	}
	if p.Seq >= s.seen.size() {
		s.outside.Add(1)
		return
	}
	s.received.Add(1)
	s.last.Store(now.UnixNano())
	if s.seen.set(p.Seq) {
		s.dups.Add(1)
		return
	}
	s.unique.Add(1)
	s.mu.Lock()
	s.e2e.add(now.Sub(p.Sent))
	s.mu.Unlock()
}

// wait waits until every accepted message arrived, or nothing arrived for
// idle, or max passed.
func (s *subscriber) wait(want func() uint64, idle, maxWait time.Duration) time.Duration {
	start := time.Now()
	lastCount, lastChange := s.unique.Load(), start
	for time.Since(start) < maxWait {
		n := s.unique.Load()
		if n >= want() {
			break
		}
		if n != lastCount {
			lastCount, lastChange = n, time.Now()
		} else if time.Since(lastChange) > idle {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func (s *subscriber) close() { s.client.Disconnect(250) }

// SubReport is the subscriber side of the report.
type SubReport struct {
	URL        string  `json:"url"`
	Topic      string  `json:"topic"`
	QoS        int     `json:"qos"`
	Received   uint64  `json:"received"`   // this run's messages, duplicates included
	Unique     uint64  `json:"unique"`     // distinct sequences received
	Duplicated uint64  `json:"duplicated"` // receipts of a sequence already received
	Lost       uint64  `json:"lost"`       // answered 200 but never received
	Unexpected uint64  `json:"unexpected"` // received but not answered 200 (e.g. the request timed out)
	Foreign    uint64  `json:"foreign"`    // other runs (retained leftovers) or not ours
	LostConns  uint64  `json:"connection_losses"`
	WaitS      float64 `json:"wait_s"` // waited after the last send for stragglers
	Complete   bool    `json:"complete"`
	E2E        Latency `json:"e2e_latency"`
}

func (s *subscriber) report(url, topic string, qos byte, wait time.Duration) *SubReport {
	_, lost, unexpected := s.accepted.diff(s.seen)
	s.mu.Lock()
	e2e := s.e2e.summary()
	s.mu.Unlock()
	return &SubReport{
		URL: url, Topic: topic, QoS: int(qos),
		Received: s.received.Load(), Unique: s.unique.Load(), Duplicated: s.dups.Load(),
		Lost: lost, Unexpected: unexpected, Foreign: s.foreign.Load() + s.outside.Load(),
		LostConns: s.lostConns.Load(), WaitS: wait.Seconds(), Complete: lost == 0,
		E2E: e2e,
	}
}
