package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

// durableRecorder is a paho client with a durable subscriber's id that
// records what it receives, and can stall its handler.
type durableRecorder struct {
	mu    sync.Mutex
	got   []string // "<device> <n>" in arrival order
	stall chan struct{}
	after int // stall once, after this many arrivals (0: never)
}

func (r *durableRecorder) handle(_ paho.Client, m paho.Message) {
	r.mu.Lock()
	parts := strings.Split(m.Topic(), "/")
	r.got = append(r.got, parts[len(parts)-2]+" "+string(m.Payload()))
	stall := r.after > 0 && len(r.got) == r.after
	r.mu.Unlock()
	if stall {
		<-r.stall // paho acknowledges only once the handler returns
	}
}

func (r *durableRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// check verifies that want messages per device arrived exactly once each,
// in order.
func (r *durableRecorder) check(t *testing.T, devices, perDevice int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	next := map[string]int{}
	seen := map[string]bool{}
	for i, g := range r.got {
		if seen[g] {
			t.Fatalf("arrival %d: %q received twice", i, g)
		}
		seen[g] = true
		dev, n, _ := strings.Cut(g, " ")
		if want := fmt.Sprint(next[dev]); n != want {
			t.Fatalf("arrival %d: device %s message %s, want %s (per-device order)", i, dev, n, want)
		}
		next[dev]++
	}
	if len(r.got) != devices*perDevice {
		t.Fatalf("received %d messages, want %d", len(r.got), devices*perDevice)
	}
}

func dialDurable(t *testing.T, srv *Server, id, user, pass, filter string, r *durableRecorder) (paho.Client, error) {
	t.Helper()
	return dial(t, clientOpts{url: tcpURL(srv), user: user, pass: pass, configure: func(o *paho.ClientOptions) {
		o.SetClientID(id).SetOrderMatters(true).SetCleanSession(true).SetAutoReconnect(false).
			SetOnConnectHandler(func(c paho.Client) { c.Subscribe(filter, 1, r.handle) })
	}})
}

// startDurable starts a server declaring the durable subscriber durableCfg
// and its sink.
func startDurable(t *testing.T) (*Server, *Subscriber) {
	t.Helper()
	srv := startServer(t, Config{AllowAnonymous: true, Subscribers: []SubscriberConfig{durableCfg()}})
	dur, _ := newSubscriberSink(t, srv, durableCfg())
	return srv, dur
}

// dialStalled connects the durable client to filter with a recorder that
// stalls after after arrivals.
func dialStalled(t *testing.T, srv *Server, after int, filter string) *durableRecorder {
	t.Helper()
	rec := &durableRecorder{stall: make(chan struct{}), after: after}
	if _, err := dialDurable(t, srv, durableID, "", "", filter, rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func newSubscriberSink(t *testing.T, srv *Server, cfg SubscriberConfig) (*Subscriber, *testutil.LogBuffer) {
	t.Helper()
	return build(t, "NewSubscriber", srv, cfg, NewSubscriber)
}

// deviceMsgs returns perDevice messages for each of devices devices,
// interleaved; the payload is the message's number for its device.
func deviceMsgs(devices, perDevice int) []sinks.Message {
	var out []sinks.Message
	for n := range perDevice {
		for d := range devices {
			out = append(out, msg("p", fmt.Sprintf("dev%02d", d), sinks.KindData, fmt.Sprint(n)))
		}
	}
	return out
}

// forward publishes msgs to s in batches like the forwarder, retrying what
// an attempt did not deliver.
func forward(ctx context.Context, s sinks.Sink, msgs []sinks.Message, batch int) error {
	for len(msgs) > 0 {
		b := msgs[:min(batch, len(msgs))]
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		n, err := s.Publish(actx, b)
		cancel()
		msgs = msgs[n:]
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	return nil
}

const durableID = "historian"

func durableCfg() SubscriberConfig {
	return SubscriberConfig{Name: "hist", ClientID: durableID, Username: "historian", GatewayID: testGateway}
}

// A durable client that stops reading while a burst larger than mochi's
// per-client buffer (8,192) is delivered gets every message once, in
// per-device order; the ordinary fan-out of a broker sink on the same
// topics reaches an ordinary subscriber and never the durable client.
func TestSubscriberSlowClientBurst(t *testing.T) {
	srv, dur := startDurable(t)
	local, _ := newSink(t, srv, SinkConfig{Name: "local"})

	rec := dialStalled(t, srv, 50, "wittra/+/+/data")
	viewer := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "wittra/p/dev00/data", 0)
	testutil.WaitFor(t, 20*time.Second, "durable client connected", dur.Connected)

	const devices, perDevice = 10, 1000 // 10,000 > 8,192
	msgs := deviceMsgs(devices, perDevice)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- forward(ctx, dur, msgs, 1000) }()
	publish(t, local, msgs[:devices]...) // one message per device through the ordinary fan-out

	testutil.WaitFor(t, 20*time.Second, "the client stalled", func() bool { return rec.count() >= 50 })
	time.Sleep(3 * time.Second) // not reading: the window fills, the rest waits
	if n := dur.Stats().Sent.Load(); n > uint64(DefaultWindow+50) {
		t.Fatalf("sent %d publications to a stalled client, window %d", n, DefaultWindow)
	}
	close(rec.stall)
	if err := <-errc; err != nil {
		t.Fatalf("forward: %v", err)
	}
	rec.check(t, devices, perDevice)
	if r := viewer.Next(t, waitLong); r.Payload != "0" {
		t.Fatalf("ordinary subscriber got %+v", r)
	}
	if d := srv.Dropped(); d != 0 {
		t.Fatalf("broker dropped %d", d)
	}
}

// Messages wait while the client is away; a message no subscription
// matches is skipped (counted) once the client is subscribed.
func TestSubscriberAwayAndUnmatched(t *testing.T) {
	srv, dur := startDurable(t)
	srv.subs.settle = 50 * time.Millisecond

	msgs := []sinks.Message{
		msg("p", "d1", sinks.KindData, "0"),
		msg("p", "d1", sinks.KindEvent, "e"),
		msg("p", "d1", sinks.KindData, "1"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	n, err := dur.Publish(ctx, msgs)
	cancel()
	if n != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish with the client away = %d, %v; want 0, deadline exceeded", n, err)
	}
	if dur.Connected() {
		t.Fatal("Connected with no client")
	}
	rec := &durableRecorder{}
	if _, err := dialDurable(t, srv, durableID, "", "", "wittra/+/+/data", rec); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Publish may return early with the rest in flight: repeat as the
	// forwarder does.
	if err := forward(ctx, dur, msgs, len(msgs)); err != nil {
		t.Fatalf("forward: %v", err)
	}
	rec.check(t, 1, 2)
	if u := dur.Stats().Unmatched.Load(); u != 1 {
		t.Fatalf("unmatched = %d, want 1", u)
	}
}

// With broker users, the durable client id is refused to another user (and
// to anonymous clients): the session keeps delivering to its owner. A
// second connection of the owner takes over and gets what the first one
// had not acknowledged.
func TestSubscriberTakeover(t *testing.T) {
	srv := startServer(t, Config{
		Users: []User{
			{Username: "historian", Password: "h-pass"},
			{Username: "other", Password: "o-pass"},
		},
		Subscribers: []SubscriberConfig{durableCfg()},
	})
	dur, _ := newSubscriberSink(t, srv, durableCfg())

	first := &durableRecorder{stall: make(chan struct{}), after: 1}
	defer close(first.stall)
	if _, err := dialDurable(t, srv, durableID, "historian", "h-pass", "wittra/+/+/data", first); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "durable client connected", dur.Connected)

	for _, who := range []struct{ user, pass string }{{"other", "o-pass"}, {"", ""}} {
		_, err := dialDurable(t, srv, durableID, who.user, who.pass, "wittra/#", &durableRecorder{})
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "not authori") {
			t.Fatalf("connect as %q with the durable client id: %v, want not authorized", who.user, err)
		}
	}
	if !dur.Connected() {
		t.Fatal("the refused connection disturbed the owner's")
	}

	msgs := deviceMsgs(1, 5)
	errc := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { errc <- forward(ctx, dur, msgs, 1000) }()
	testutil.WaitFor(t, 20*time.Second, "first connection received one", func() bool { return first.count() == 1 })

	second := &durableRecorder{}
	if _, err := dialDurable(t, srv, durableID, "historian", "h-pass", "wittra/+/+/data", second); err != nil {
		t.Fatalf("owner's second connection: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("forward: %v", err)
	}
	// The first connection stalled on message 0 without acknowledging it:
	// the second gets all five, in order.
	second.check(t, 1, 5)
	if r := dur.Stats().Resent.Load(); r == 0 {
		t.Fatal("nothing counted as resent after the takeover")
	}
}

// An ordinary subscriber that cannot keep up loses messages (best effort),
// and the loss is counted per client and logged.
func TestDropsOfOrdinarySubscriberReported(t *testing.T) {
	log, buf := testLogger()
	srv, err := New(Config{AllowAnonymous: true, Listeners: []Listener{{Address: "127.0.0.1:0"}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	srv.subs.drops.first = 100 * time.Millisecond
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	local, _ := newSink(t, srv, SinkConfig{Name: "local"})

	stall := make(chan struct{})
	defer close(stall)
	c := mustDial(t, clientOpts{url: tcpURL(srv), configure: func(o *paho.ClientOptions) {
		// Its stalled handler also stalls paho's reading of PINGRESP: a
		// long keepalive keeps paho from hanging up on a slow machine.
		o.SetClientID("slow-viewer").SetOrderMatters(true).SetKeepAlive(10 * time.Minute).SetPingTimeout(10 * time.Minute)
	}})
	if tok := c.Subscribe("wittra/#", 1, func(paho.Client, paho.Message) { <-stall }); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t0 := time.Now()
	publish(t, local, deviceMsgs(10, 1000)...)
	publish(t, local, deviceMsgs(10, 1000)...)
	t.Logf("published in %v; dropped %d, by client %v", time.Since(t0), srv.Dropped(), srv.DroppedByClient())
	testutil.WaitFor(t, 20*time.Second, "drops counted for slow-viewer", func() bool { return srv.DroppedByClient()["slow-viewer"] > 0 })
	testutil.WaitFor(t, 20*time.Second, "drop report logged", func() bool {
		return strings.Contains(buf.String(), `"client":"slow-viewer"`) && strings.Contains(buf.String(), "type subscriber")
	})
	if strings.Contains(buf.String(), mochiQuotaMsg) {
		t.Fatal("mochi's per-message quota warning reached the log")
	}
}

func TestSubscriberConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfgs []SubscriberConfig
		want string
	}{
		{"NoClientID", []SubscriberConfig{{GatewayID: "g"}}, "client_id: required"},
		{"Duplicate", []SubscriberConfig{{ClientID: "a", GatewayID: "g"}, {ClientID: "a", GatewayID: "g"}}, "declared twice"},
		{"QoS", []SubscriberConfig{{ClientID: "a", GatewayID: "g", QoS: 3}}, "qos"},
		{"Sentinel", []SubscriberConfig{{ClientID: sentinelClient, GatewayID: "g"}}, "reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, _ := testLogger()
			srv, err := New(Config{Listeners: []Listener{{Address: "127.0.0.1:0"}}, Subscribers: tc.cfgs}, log)
			if err == nil {
				srv.Close()
				t.Fatal("New accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	srv := startServer(t, Config{AllowAnonymous: true})
	log, _ := testLogger()
	if _, err := NewSubscriber(srv, durableCfg(), log); err == nil || !strings.Contains(err.Error(), "not declared") {
		t.Fatalf("NewSubscriber of an undeclared id: %v", err)
	}
}

func TestDurableCovers(t *testing.T) {
	d := &durable{cfg: SubscriberConfig{TopicPrefix: "wittra", GatewayID: "gw"}}
	v := &durable{cfg: SubscriberConfig{TopicPrefix: "wittra", GatewayID: "gw", Values: true}}
	for _, tc := range []struct {
		topic       string
		plain, vals bool
	}{
		{"wittra/p/d/data", true, true},
		{"wittra/p/d/event", true, true},
		{"wittra/p/d/battery/percentage", false, true},
		{"wittra/gateway/gw/status", false, false},
		{"wittra/p/d", false, false},
		{"other/p/d/data", false, false},
		{"wittrax/p/d/data", false, false},
	} {
		if got := d.covers(tc.topic); got != tc.plain {
			t.Errorf("covers(%q) = %v, want %v", tc.topic, got, tc.plain)
		}
		if got := v.covers(tc.topic); got != tc.vals {
			t.Errorf("with values: covers(%q) = %v, want %v", tc.topic, got, tc.vals)
		}
	}
}

// A client that subscribes to data and then, in a second SUBSCRIBE, to
// events loses no event in between: an unmatched message waits for the
// settle time before it is skipped.
func TestSubscriberSecondSubscribeWithinSettle(t *testing.T) {
	srv, dur := startDurable(t)
	srv.subs.settle = 3 * time.Second // generous: the machine may be slow

	msgs := []sinks.Message{
		msg("p", "d1", sinks.KindData, "0"),
		msg("p", "d1", sinks.KindEvent, "1"),
		msg("p", "d1", sinks.KindData, "2"),
	}
	errc := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { errc <- forward(ctx, dur, msgs, 1000) }()

	rec := &durableRecorder{}
	c, err := dialDurable(t, srv, durableID, "", "", "wittra/+/+/data", rec)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "first data message", func() bool { return rec.count() >= 1 })
	if tok := c.Subscribe("wittra/+/+/event", 1, rec.handle); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe events: %v", tok.Error())
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	rec.check(t, 1, 3)
	if u := dur.Stats().Unmatched.Load(); u != 0 {
		t.Fatalf("unmatched = %d, want 0", u)
	}
}
