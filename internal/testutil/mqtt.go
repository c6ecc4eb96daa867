package testutil

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Received is one message a Subscriber got.
type Received struct {
	Topic   string
	Payload string
	Retain  bool
	QoS     byte
}

// SubscriberOptions configures Subscribe.
type SubscriberOptions struct {
	ClientID           string // "": a unique test-sub-N
	Username, Password string
	// Persistent: clean session off, so the broker keeps the subscription
	// and queues messages while the subscriber is away.
	Persistent bool
	// Reconnect: paho reconnects by itself (every 500 ms at most).
	Reconnect bool
	// Handler, when set, gets every message instead of the Subscriber's
	// own record (for tests that parse and count on arrival).
	Handler paho.MessageHandler
	// OnConnectionLost is called when the connection drops.
	OnConnectionLost func(error)
}

// Subscriber records, in arrival order, what one MQTT subscription
// receives (unless SubscriberOptions.Handler took the messages).
type Subscriber struct {
	Client paho.Client

	mu   sync.Mutex
	msgs []Received
	next int // Next's cursor
}

var clientSeq atomic.Int64

// UniqueClientID returns a client id no other client of this test binary
// uses: prefix-N.
func UniqueClientID(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, clientSeq.Add(1))
}

func (s *Subscriber) record(_ paho.Client, m paho.Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, Received{Topic: m.Topic(), Payload: string(m.Payload()), Retain: m.Retained(), QoS: m.Qos()})
	s.mu.Unlock()
}

// Subscribe connects a paho client to url (retrying for up to 10 s while
// the broker refuses) and subscribes it to filter at qos; it disconnects
// at cleanup. Ordered delivery is on, so the record is in arrival order.
func Subscribe(t testing.TB, url, filter string, qos byte, o SubscriberOptions) *Subscriber {
	t.Helper()
	if o.ClientID == "" {
		o.ClientID = UniqueClientID("test-sub")
	}
	s := new(Subscriber)
	handler := o.Handler
	if handler == nil {
		handler = s.record
	}
	opts := paho.NewClientOptions().
		AddBroker(url).
		SetClientID(o.ClientID).
		SetUsername(o.Username).
		SetPassword(o.Password).
		SetProtocolVersion(4).
		SetOrderMatters(true). // arrival order is what tests check; handlers are quick
		SetCleanSession(!o.Persistent).
		SetAutoReconnect(o.Reconnect).
		SetConnectRetry(false).
		SetMaxReconnectInterval(500 * time.Millisecond).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(handler) // what a restored session delivers before Subscribe
	if o.OnConnectionLost != nil {
		opts.SetConnectionLostHandler(func(_ paho.Client, err error) { o.OnConnectionLost(err) })
	}
	s.Client = paho.NewClient(opts)
	began := time.Now()
	for attempt := 1; ; attempt++ {
		tok := s.Client.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			t.Fatalf("subscriber %s: connect to %s timed out", o.ClientID, url)
		}
		if tok.Error() == nil {
			break
		}
		if attempt >= 20 || time.Since(began) > 10*time.Second {
			t.Fatalf("subscriber %s: connect to %s: %v", o.ClientID, url, tok.Error())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() {
		if s.Client.IsConnectionOpen() {
			s.Client.Disconnect(50)
		}
	})
	subscribe(t, s.Client, filter, qos, handler)
	return s
}

// SubscribeClient subscribes the connected client c to filter at qos and
// records what arrives.
func SubscribeClient(t testing.TB, c paho.Client, filter string, qos byte) *Subscriber {
	t.Helper()
	s := &Subscriber{Client: c}
	subscribe(t, c, filter, qos, s.record)
	return s
}

func subscribe(t testing.TB, c paho.Client, filter string, qos byte, h paho.MessageHandler) {
	t.Helper()
	tok := c.Subscribe(filter, qos, h)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("subscribe %s: timed out", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	if code := tok.(*paho.SubscribeToken).Result()[filter]; code > 2 {
		t.Fatalf("subscribe %s: refused, code %#x", filter, code)
	}
}

// Messages returns what arrived so far, in arrival order.
func (s *Subscriber) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.msgs...)
}

// WaitFor polls until ok holds for what arrived, failing after d.
func (s *Subscriber) WaitFor(t testing.TB, d time.Duration, what string, ok func([]Received) bool) []Received {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := s.Messages()
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (%d messages arrived)", what, d, len(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Poll returns the next message not yet returned by Poll, Next, Until or
// Quiet, waiting up to d for it; false if none came.
func (s *Subscriber) Poll(d time.Duration) (Received, bool) {
	deadline := time.Now().Add(d)
	for {
		s.mu.Lock()
		if s.next < len(s.msgs) {
			s.next++
			r := s.msgs[s.next-1]
			s.mu.Unlock()
			return r, true
		}
		s.mu.Unlock()
		if !time.Now().Before(deadline) {
			return Received{}, false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Next is Poll that fails the test when nothing came within d.
func (s *Subscriber) Next(t testing.TB, d time.Duration) Received {
	t.Helper()
	r, ok := s.Poll(d)
	if !ok {
		t.Fatalf("no message within %v", d)
	}
	return r
}

// Until returns the next messages up to and including the first on topic,
// failing the test after d.
func (s *Subscriber) Until(t testing.TB, topic string, d time.Duration) []Received {
	t.Helper()
	var got []Received
	deadline := time.Now().Add(d)
	for {
		r, ok := s.Poll(time.Until(deadline))
		if !ok {
			t.Fatalf("no message on %s within %v; got %v", topic, d, got)
		}
		got = append(got, r)
		if r.Topic == topic {
			return got
		}
	}
}

// Quiet fails the test if a message not yet returned arrives within d.
func (s *Subscriber) Quiet(t testing.TB, d time.Duration) {
	t.Helper()
	if r, ok := s.Poll(d); ok {
		t.Fatalf("unexpected message %+v", r)
	}
}
