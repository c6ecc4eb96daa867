package mqttpub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

// The core is tested against the real embedded broker (mochi), reached
// through a TCP proxy that can withhold the broker's answers and cut the
// connection; the sinks' own tests run it against mosquitto and the
// Cumulocity fake.

// broker is a mochi server that records every publication it routes, in
// order.
type broker struct {
	srv  *mqtt.Server
	addr string
	mu   sync.Mutex
	got  []string // "topic payload"
}

func startBroker(t *testing.T) *broker {
	t.Helper()
	b := &broker{srv: mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})}
	if err := b.srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := b.srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.srv.Close() })
	b.addr = l.Address()
	err := b.srv.Subscribe("#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		b.mu.Lock()
		b.got = append(b.got, pk.TopicName+" "+string(pk.Payload))
		b.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// receivedAtLeast waits (generously) until n publications are routed:
// mochi acknowledges before it has handed a publication to subscribers.
func (b *broker) receivedAtLeast(t *testing.T, n int) []string {
	t.Helper()
	testutil.Poll(10*time.Second, func() bool { return len(b.received()) >= n })
	return b.received()
}

func (b *broker) received() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.got...)
}

// proxy forwards TCP connections to a backend. While deaf, it drops what
// the broker sends (CONNACK, PUBACK); cut closes every connection.
type proxy struct {
	l     net.Listener
	deaf  atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, backend string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l}
	t.Cleanup(func() { _ = l.Close(); p.cut() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(b, c); _ = b.Close() }()
			go p.back(c, b)
		}
	}()
	return p
}

func (p *proxy) back(c, b net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := b.Read(buf)
		if err != nil {
			return
		}
		if !p.deaf.Load() {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func newPublisher(t *testing.T, addr string, mod func(*Options)) *Publisher {
	t.Helper()
	u, _, err := ParseURL("tcp://"+addr, "tcp")
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Peer: "broker", URL: u, ClientID: "pub-" + t.Name(), QoS: 1, Window: 8,
		AckTimeout: 5 * time.Second, RetryInterval: 50 * time.Millisecond, MaxRetryInterval: 200 * time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	p, err := New(o, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background(), nil) })
	return p
}

// sendAll sends msgs (each as two publications) and flushes.
func sendAll(b *Batch, msgs []string) error {
	for i, m := range msgs {
		for k, suffix := range []string{"a", "b"} {
			if err := b.Send(sinks.Publication{Topic: "t/" + suffix, Payload: []byte(m)}, i, k == 1); err != nil {
				return err
			}
		}
	}
	return b.Flush()
}

func numbered(n int) []string {
	msgs := make([]string, n)
	for i := range msgs {
		msgs[i] = fmt.Sprintf("m%03d", i)
	}
	return msgs
}

func begin(t *testing.T, p *Publisher) *Batch {
	t.Helper()
	b, err := p.Begin(context.Background(), 20*time.Second)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	return b
}

// OnConnect runs before any data, and a Batch delivers in order through a
// window smaller than the batch.
func TestBatchInOrderAfterOnConnect(t *testing.T) {
	br := startBroker(t)
	p := newPublisher(t, br.addr, func(o *Options) {
		o.OnConnect = func(ctx context.Context, c *Conn) error {
			return c.Publish(ctx, Message{Topic: "status", QoS: 1, Payload: []byte("online")})
		}
	})
	msgs := numbered(30)
	b := begin(t, p)
	err := sendAll(b, msgs)
	n := b.Delivered()
	b.End()
	if err != nil || n != len(msgs) {
		t.Fatalf("delivered %d of %d: %v", n, len(msgs), err)
	}
	want := []string{"status online"}
	for _, m := range msgs {
		want = append(want, "t/a "+m, "t/b "+m)
	}
	if got := br.receivedAtLeast(t, len(want)); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("broker got %q\nwant %q", got, want)
	}
}

// A connection cut while acknowledgements are withheld proves nothing; the
// next Batch runs on a new connection and everything arrives.
func TestCutProvesNothing(t *testing.T) {
	br := startBroker(t)
	px := startProxy(t, br.addr)
	p := newPublisher(t, px.l.Addr().String(), nil)
	msgs := numbered(3)

	b := begin(t, p)
	px.deaf.Store(true)
	for i, m := range msgs {
		if err := b.Send(sinks.Publication{Topic: "t/a", Payload: []byte(m)}, i, true); err != nil {
			t.Fatal(err)
		}
	}
	px.cut()
	err := b.Flush()
	n, epoch := b.Delivered(), b.c.epoch
	b.End()
	// paho fails the tokens ("connection lost before Publish completed"),
	// or the Batch sees the new epoch first.
	if err == nil || errors.Is(err, ErrAckTimeout) || n != 0 {
		t.Fatalf("Flush after a cut without acks = %d, %v; want 0 and the loss", n, err)
	}

	px.deaf.Store(false)
	b = begin(t, p)
	defer b.End()
	if b.c.epoch == epoch {
		t.Fatal("second Batch on the connection of the first")
	}
	if err := sendAll(b, msgs); err != nil || b.Delivered() != len(msgs) {
		t.Fatalf("after reconnect: %d, %v", b.Delivered(), err)
	}
}

// No acknowledgement within AckTimeout: the Batch fails with ErrAckTimeout
// and the publisher drops that connection for a new one.
func TestAckTimeoutDropsConnection(t *testing.T) {
	br := startBroker(t)
	px := startProxy(t, br.addr)
	p := newPublisher(t, px.l.Addr().String(), func(o *Options) { o.AckTimeout = 300 * time.Millisecond })
	b := begin(t, p)
	first := b.c
	px.deaf.Store(true)
	err := sendAll(b, numbered(1))
	b.End()
	if !errors.Is(err, ErrAckTimeout) {
		t.Fatalf("err %v, want ErrAckTimeout", err)
	}
	if first.current() {
		t.Error("the silent connection is still current")
	}
	px.deaf.Store(false)
	b = begin(t, p)
	defer b.End()
	if b.c == first {
		t.Fatal("Batch on the dropped connection")
	}
	if err := sendAll(b, numbered(2)); err != nil {
		t.Fatal(err)
	}
}

// A connection whose OnConnect fails is never offered; it is dropped and
// made again.
func TestOnConnectFailureRetries(t *testing.T) {
	br := startBroker(t)
	var calls atomic.Int32
	p := newPublisher(t, br.addr, func(o *Options) {
		o.OnConnect = func(context.Context, *Conn) error {
			if calls.Add(1) < 3 {
				return errors.New("announcement refused")
			}
			return nil
		}
	})
	b := begin(t, p)
	defer b.End()
	if n := calls.Load(); n != 3 {
		t.Errorf("OnConnect ran %d times before the connection was offered, want 3", n)
	}
	if err := sendAll(b, numbered(1)); err != nil {
		t.Fatal(err)
	}
}

// Close says goodbye on the open connection; afterwards Begin fails with
// ErrClosed and a second Close does nothing.
func TestCloseGoodbye(t *testing.T) {
	br := startBroker(t)
	p := newPublisher(t, br.addr, nil)
	begin(t, p).End()
	err := p.Close(context.Background(), func(ctx context.Context, c *Conn) error {
		return c.Publish(ctx, Message{Topic: "status", QoS: 1, Retain: true, Payload: []byte("offline")})
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := br.receivedAtLeast(t, 1); len(got) != 1 || got[0] != "status offline" {
		t.Errorf("broker got %q, want the goodbye", got)
	}
	if _, err := p.Begin(context.Background(), time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("Begin after Close: %v", err)
	}
	if err := p.Close(context.Background(), nil); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestParseURL(t *testing.T) {
	for raw, want := range map[string]string{
		"tcp://h":         "tcp://h:1883",
		"mqtt://h":        "mqtt://h:1883",
		"mqtts://h":       "mqtts://h:8883",
		"tls://h:1":       "tls://h:1",
		"wss://h/mqtt":    "wss://h/mqtt",
		"http://h":        "must start with tcp://, mqtt://, mqtts://, tls:// or wss://",
		"tcp://u:p@h":     "must not contain credentials",
		"tcp://:1883":     "must name a host",
		"tcp://h\x00:188": "not a valid URL",
	} {
		u, _, err := ParseURL(raw, "tcp", "mqtt", "mqtts", "tls", "wss")
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = u.String()
		}
		if !strings.HasPrefix(got, want) {
			t.Errorf("ParseURL(%q) = %q, want %q", raw, got, want)
		}
	}
}
