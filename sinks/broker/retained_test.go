package broker

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"wittra-gateway/internal/clock"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

func newClock() *clock.Fake { return clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) }

// tagBody is a Wittra tag message whose values depend on n, so a newer
// message changes every value topic.
func tagBody(n int) string {
	return fmt.Sprintf(`{"payloadType":"DATA","payload":{"temperature":%d.5,"battery":{"percentage":%d,"voltage":3.%d}}}`, 20+n, 50+n, n)
}

// expected returns topic → payload of m's publications.
func expected(t *testing.T, m sinks.Message) map[string]string {
	t.Helper()
	pubs, err := sinks.Publications(nil, DefaultTopicPrefix, m, true)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pubs {
		out[p.Topic] = string(p.Payload)
	}
	return out
}

// collect reads messages until want topics arrived, then for a little
// longer to catch extras or duplicates; it fails on either.
func (s *subscriber) collect(t *testing.T, want map[string]string) {
	t.Helper()
	got := map[string]testutil.Received{}
	deadline := time.Now().Add(waitLong + time.Duration(len(want))*time.Millisecond) // generous for big sets under -race
	for len(got) < len(want) {
		r, ok := s.Poll(time.Until(deadline))
		if ok {
			if prev, dup := got[r.Topic]; dup {
				t.Fatalf("%s twice: %+v then %+v", r.Topic, prev, r)
			}
			got[r.Topic] = r
		} else {
			var missing []string
			for topic := range want {
				if _, ok := got[topic]; !ok && len(missing) < 5 {
					missing = append(missing, topic)
				}
			}
			t.Fatalf("got %d of %d retained topics within %v; missing e.g. %v", len(got), len(want), waitLong, missing)
		}
	}
	for topic, r := range got {
		w, ok := want[topic]
		switch {
		case !ok:
			t.Errorf("unexpected %s = %q", topic, r.Payload)
		case r.Payload != w || !r.Retain:
			t.Errorf("%s = %q retain=%v, want %q retained", topic, r.Payload, r.Retain, w)
		}
	}
	s.Quiet(t, 200*time.Millisecond)
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestRetainedLateSubscriber(t *testing.T) {
	srv := startServer(t, Config{AllowAnonymous: true})
	s, _ := newSink(t, srv, SinkConfig{Values: true, Retain: true})
	old := msg(testProject, "D1", sinks.KindData, tagBody(1))
	newer := msg(testProject, "D1", sinks.KindData, tagBody(2))
	other := msg(testProject, "D2", sinks.KindData, tagBody(3))
	publish(t, s, old, newer, other)
	d1, d2 := expected(t, newer), expected(t, other)
	status := map[string]string{statusTopic: "online"}
	url := tcpURL(srv)

	t.Run("ExactTopic", func(t *testing.T) {
		for topic, payload := range d1 {
			sub := subscribe(t, mustDial(t, clientOpts{url: url}), topic, 1)
			sub.collect(t, map[string]string{topic: payload})
		}
	})
	t.Run("DeviceWildcard", func(t *testing.T) {
		subscribe(t, mustDial(t, clientOpts{url: url}), "wittra/"+testProject+"/D1/#", 1).collect(t, d1)
	})
	t.Run("PlusWildcard", func(t *testing.T) {
		want := map[string]string{}
		for _, m := range []map[string]string{d1, d2} {
			for k, v := range m {
				if strings.HasSuffix(k, "/battery/percentage") {
					want[k] = v
				}
			}
		}
		subscribe(t, mustDial(t, clientOpts{url: url}), "wittra/+/+/battery/percentage", 0).collect(t, want)
	})
	t.Run("Everything", func(t *testing.T) {
		subscribe(t, mustDial(t, clientOpts{url: url}), "#", 2).collect(t, merge(d1, d2, status))
	})
	t.Run("Shared", func(t *testing.T) {
		// Shared subscriptions get no retained messages.
		subscribe(t, mustDial(t, clientOpts{url: url}), "$share/g/wittra/#", 1).Quiet(t, 300*time.Millisecond)
	})
	t.Run("Cleared", func(t *testing.T) {
		// An empty retained publish of the gateway removes the topic.
		topic := "wittra/" + testProject + "/D2/temperature"
		if err := srv.publish(topic, nil, true, 1); err != nil {
			t.Fatal(err)
		}
		want := merge(d2)
		delete(want, topic)
		subscribe(t, mustDial(t, clientOpts{url: url}), "wittra/"+testProject+"/D2/#", 1).collect(t, want)
	})
}

// TestRetainedQoS checks the inflight bookkeeping of retained messages sent
// with QoS 1 and 2: the client's acks complete them, so nothing stays in
// flight, and the granted QoS caps the QoS.
func TestRetainedQoS(t *testing.T) {
	srv := startServer(t, Config{AllowAnonymous: true})
	s, _ := newSink(t, srv, SinkConfig{Values: true, Retain: true})
	m := msg(testProject, "D1", sinks.KindData, tagBody(1))
	publish(t, s, m)
	want := expected(t, m)
	for _, qos := range []byte{0, 1, 2} {
		t.Run(fmt.Sprintf("QoS%d", qos), func(t *testing.T) {
			c := mustDial(t, clientOpts{url: tcpURL(srv)})
			sub := subscribe(t, c, "wittra/#", qos)
			got := map[string]byte{}
			for len(got) < len(want) {
				r := sub.Next(t, waitLong)
				got[r.Topic] = r.QoS
			}
			for topic, q := range got {
				if q != qos {
					t.Errorf("%s came with QoS %d, want %d", topic, q, qos)
				}
			}
			// The acks arrive after the last message; poll for them.
			if !testutil.Poll(waitLong, func() bool { return atomic.LoadInt64(&srv.mochi.Info.Inflight) == 0 }) {
				t.Fatalf("inflight = %d after the client acked, want 0", atomic.LoadInt64(&srv.mochi.Info.Inflight))
			}
		})
	}
}

// TestRetainedInflight: retained QoS 1 messages wait in the client's
// inflight store until the client acks them, as live ones do.
func TestRetainedInflight(t *testing.T) {
	srv := startServer(t, Config{AllowAnonymous: true})
	s, _ := newSink(t, srv, SinkConfig{Values: true, Retain: true})
	m := msg(testProject, "D1", sinks.KindData, tagBody(1))
	publish(t, s, m)
	want := len(expected(t, m)) + 1 // and the status

	c := mustDial(t, clientOpts{url: tcpURL(srv), configure: func(o *paho.ClientOptions) { o.SetAutoAckDisabled(true) }})
	msgs := make(chan paho.Message, 64)
	tok := c.Subscribe("wittra/#", 1, func(_ paho.Client, m paho.Message) { msgs <- m })
	if !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	var held []paho.Message
	for len(held) < want {
		select {
		case m := <-msgs:
			held = append(held, m)
		case <-time.After(waitLong):
			t.Fatalf("got %d of %d retained messages", len(held), want)
		}
	}
	if n := atomic.LoadInt64(&srv.mochi.Info.Inflight); n != int64(want) {
		t.Fatalf("inflight before the acks = %d, want %d", n, want)
	}
	for _, m := range held {
		m.Ack()
	}
	if !testutil.Poll(waitLong, func() bool { return atomic.LoadInt64(&srv.mochi.Info.Inflight) == 0 }) {
		t.Fatalf("inflight after the acks = %d, want 0", atomic.LoadInt64(&srv.mochi.Info.Inflight))
	}
}

// TestRetainedBeyondInflightWindow: a QoS 1 wildcard subscription matching
// more retained topics than the client's in-flight window (mochi's
// MaximumInflight, 8192; 64 here to keep the test small) still gets every
// one: delivery waits for acks where mochi would drop the rest. The client
// holds its acks to fill the window.
func TestRetainedBeyondInflightWindow(t *testing.T) {
	const window = 64
	srv, err := New(Config{AllowAnonymous: true, Listeners: []Listener{{Address: "127.0.0.1:0"}}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	srv.mochi.Options.Capabilities.MaximumInflight = window // before any client: read per client and per send
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s, _ := newSink(t, srv, SinkConfig{Values: true, Retain: true})
	want := map[string]string{statusTopic: "online"}
	for i := 0; len(want) <= 2*window+10; i++ {
		m := msg(testProject, fmt.Sprintf("D%04d", i), sinks.KindData, tagBody(i%50))
		publish(t, s, m)
		for k, v := range expected(t, m) {
			want[k] = v
		}
	}
	c := mustDial(t, clientOpts{url: tcpURL(srv), configure: func(o *paho.ClientOptions) { o.SetAutoAckDisabled(true) }})
	msgs := make(chan paho.Message, len(want)+16)
	tok := c.Subscribe("#", 1, func(_ paho.Client, m paho.Message) { msgs <- m })
	if !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	next := func() paho.Message {
		select {
		case m := <-msgs:
			return m
		case <-time.After(2 * waitLong):
			t.Fatalf("no message within %v", 2*waitLong)
			return nil
		}
	}
	got := map[string]string{}
	var held []paho.Message
	for len(held) < window {
		m := next()
		held = append(held, m)
		got[m.Topic()] = string(m.Payload())
	}
	select {
	case m := <-msgs:
		t.Fatalf("message %s beyond a full in-flight window", m.Topic())
	case <-time.After(300 * time.Millisecond):
	}
	for _, m := range held {
		m.Ack()
	}
	for len(got) < len(want) {
		m := next()
		got[m.Topic()] = string(m.Payload())
		m.Ack()
	}
	for topic, payload := range want {
		if got[topic] != payload {
			t.Errorf("%s = %q, want %q", topic, got[topic], payload)
		}
	}
	if d := srv.Dropped(); d != 0 {
		t.Fatalf("broker dropped %d messages", d)
	}
}

// TestRetainedOtherClients: retained messages of other clients stay in
// mochi's own index and reach late subscribers, next to the gateway's.
func TestRetainedOtherClients(t *testing.T) {
	srv := startServer(t, Config{Users: []User{
		{Username: "writer", Password: "w", Publish: true},
		{Username: "reader", Password: "r"},
	}})
	s, _ := newSink(t, srv, SinkConfig{Values: true, Retain: true})
	m := msg(testProject, "D1", sinks.KindData, tagBody(1))
	publish(t, s, m)

	w := mustDial(t, clientOpts{url: tcpURL(srv), user: "writer", pass: "w"})
	if tok := w.Publish("plant/line1/setpoint", 1, true, "42"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	if !roundTrip(t, w) {
		t.Fatal("writer disconnected")
	}
	r := mustDial(t, clientOpts{url: tcpURL(srv), user: "reader", pass: "r"})
	subscribe(t, r, "#", 1).collect(t, merge(expected(t, m), map[string]string{
		statusTopic:            "online",
		"plant/line1/setpoint": "42",
	}))
}

// TestRetainedACL: a retained topic is sent only where the user may read.
func TestRetainedACL(t *testing.T) {
	srv := startServer(t, Config{Users: []User{{Username: "d2", Password: "p", Subscribe: []string{"wittra/+/D2/#"}}}})
	s, _ := newSink(t, srv, SinkConfig{Values: true, Retain: true})
	m1 := msg(testProject, "D1", sinks.KindData, tagBody(1))
	m2 := msg(testProject, "D2", sinks.KindData, tagBody(2))
	publish(t, s, m1, m2)
	c := mustDial(t, clientOpts{url: tcpURL(srv), user: "d2", pass: "p"})
	subscribe(t, c, "wittra/"+testProject+"/D2/#", 1).collect(t, expected(t, m2))
}

func TestRetainedExpiry(t *testing.T) {
	clk := newClock()
	srv := startServer(t, Config{AllowAnonymous: true, now: clk.Now})
	s, _ := newSink(t, srv, SinkConfig{Values: true, Retain: true, RetainPolicy: RetainPolicy{MaxAge: time.Hour}})
	silent := msg(testProject, "D1", sinks.KindData, tagBody(1))
	publish(t, s, silent)
	clk.Advance(50 * time.Minute)
	alive := msg(testProject, "D2", sinks.KindData, tagBody(2))
	publish(t, s, alive)

	live := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "wittra/"+testProject+"/D1/#", 1)
	live.collect(t, expected(t, silent))

	clk.Advance(11 * time.Minute) // D1 silent 61 min, D2 11 min
	srv.retained.sweep()

	// Live subscribers are told: an empty publish per cleared topic.
	cleared := map[string]string{}
	for topic := range expected(t, silent) {
		cleared[topic] = ""
	}
	got := map[string]bool{}
	for len(got) < len(cleared) {
		r := live.Next(t, waitLong)
		if _, ok := cleared[r.Topic]; !ok || r.Payload != "" {
			t.Fatalf("after expiry got %+v, want an empty publish on a topic of D1", r)
		}
		got[r.Topic] = true
	}
	subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "wittra/#", 1).
		collect(t, merge(expected(t, alive), map[string]string{statusTopic: "online"}))
	st := srv.RetainedStats()
	if st.ExpiredDevices != 1 || st.ExpiredTopics != uint64(len(cleared)) || st.Devices != 2 {
		t.Fatalf("stats = %+v, want 1 device (%d topics) expired, 2 devices (D2, status) left", st, len(cleared))
	}

	// The status topic never expires, however long the gateway runs.
	clk.Advance(1000 * time.Hour)
	srv.retained.sweep()
	subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), statusTopic, 1).collect(t, map[string]string{statusTopic: "online"})
}

func TestRetainedCap(t *testing.T) {
	clk := newClock()
	log, logs := testLogger()
	srv, err := New(Config{AllowAnonymous: true, now: clk.Now, Listeners: []Listener{{Address: "127.0.0.1:0"}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s, _ := newSink(t, srv, SinkConfig{Values: true, Retain: true, RetainPolicy: RetainPolicy{MaxTopics: MinRetainMaxTopics}})
	dev := func(i int) sinks.Message {
		return msg(testProject, fmt.Sprintf("D%02d", i), sinks.KindData, tagBody(i))
	}
	per := len(expected(t, dev(0))) // topics per device
	fit := (MinRetainMaxTopics - 1) / per
	for i := 0; i < fit; i++ { // the status topic and fit devices fit
		clk.Advance(time.Second)
		publish(t, s, dev(i))
	}
	if st := srv.RetainedStats(); st.EvictedDevices != 0 || st.Topics != 1+fit*per {
		t.Fatalf("before the cap: %+v, want %d topics, nothing evicted", st, 1+fit*per)
	}
	clk.Advance(time.Second)
	publish(t, s, dev(1)) // heard again: D00 is now the oldest heard of
	live := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "wittra/"+testProject+"/D00/temperature", 1)
	live.Next(t, waitLong)

	clk.Advance(time.Second)
	publish(t, s, dev(fit)) // one device too many
	if r := live.Next(t, waitLong); r.Payload != "" {
		t.Fatalf("evicted topic got %+v, want an empty publish", r)
	}
	clk.Advance(time.Second)
	publish(t, s, dev(fit+1)) // and another: D02 goes (D01 was heard after it)
	st := srv.RetainedStats()
	if st.EvictedDevices != 2 || st.EvictedTopics != uint64(2*per) || st.Topics > MinRetainMaxTopics {
		t.Fatalf("after the cap: %+v, want 2 devices (%d topics) evicted, ≤ %d topics", st, 2*per, MinRetainMaxTopics)
	}
	want := map[string]string{statusTopic: "online"}
	for i := 1; i <= fit+1; i++ {
		if i != 2 {
			want = merge(want, expected(t, dev(i)))
		}
	}
	subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "#", 1).collect(t, want)
	if !strings.Contains(logs.String(), "retained cap reached") {
		t.Fatalf("no cap warning logged")
	}
}

func TestMatchTopic(t *testing.T) {
	topics := []string{"wittra/P/D/temperature", "wittra/P/D/battery/percentage", "wittra/P/D", "wittra/P", "$x/P/D/t", "wittra/P/D/a/b/c"}
	filters := []string{"#", "wittra/#", "wittra/+/+/#", "wittra/+/D/+", "wittra/P/D/battery/+", "+/P/D/temperature",
		"wittra/P/D", "wittra/P/D/#", "wittra/+", "+/+/+", "$x/#", "+/P/D/t", "wittra/P/D/a/#", "wittra/P/D/a/+/c", "other/#"}
	for _, topic := range topics {
		for _, f := range filters {
			levels := strings.Split(f, "/")
			want := filter(levels).covers(topic)
			st := newRetainedStore("wittra", RetainPolicy{}, time.Now)
			if strings.HasPrefix(topic, "$x") {
				st = newRetainedStore("$x", RetainPolicy{}, time.Now)
			}
			if !st.owns(topic) {
				continue
			}
			key, suffix := st.split(topic)
			if suffix == wholeTopic {
				suffix = ""
			}
			if got := matchTopic(levels, key, suffix); got != want {
				t.Errorf("matchTopic(%q, %q) = %v, want %v", f, topic, got, want)
			}
			if want && !prefixMayMatch(levels, st.prefix) {
				t.Errorf("prefixMayMatch(%q, %q) = false for matching topic %q", f, st.prefix, topic)
			}
		}
	}
}

// TestRetainedStoreBounds drives the store alone: the byte cap, eviction
// order by last heard of, ageing on the injected clock, and pinning.
func TestRetainedStoreBounds(t *testing.T) {
	clk := newClock()
	st := newRetainedStore("p", RetainPolicy{MaxAge: time.Hour, MaxBytes: 1000}, clk.Now)
	st.pin("p/gateway/gw/status")
	st.set("p/gateway/gw/status", []byte("online"), 1)
	body := make([]byte, 300)
	for i := 0; i < 3; i++ {
		clk.Advance(time.Minute)
		if cleared := st.set(fmt.Sprintf("p/J/D%d/data", i), body, 1); len(cleared) != 0 {
			t.Fatalf("device %d: cleared %v below the cap", i, cleared)
		}
	}
	clk.Advance(time.Minute)
	st.set("p/J/D0/temperature", []byte("21.5"), 1) // D0 heard again: D1 is the oldest now
	clk.Advance(time.Minute)
	cleared := st.set("p/J/D3/data", body, 1) // 6+4+4×300 > 1000
	if len(cleared) != 1 || cleared[0].topic != "p/J/D1/data" {
		t.Fatalf("cleared %v, want p/J/D1/data (heard of longest ago)", cleared)
	}
	if s := st.statsNow(); s.Bytes != 6+4+900 || s.Devices != 4 || s.EvictedDevices != 1 || s.EvictedTopics != 1 {
		t.Fatalf("stats %+v, want 910 bytes, 4 devices (status, D0, D2, D3), 1 evicted", s)
	}

	// Ageing: D2 last heard 3 min after the start, D0 at 4, D3 at 5.
	clk.Advance(time.Hour - time.Minute) // now start+64m: D2 61 min silent, D0 exactly 60
	got := st.sweep()
	if len(got) != 1 || got[0].topic != "p/J/D2/data" {
		t.Fatalf("sweep cleared %v, want p/J/D2/data", got)
	}
	clk.Advance(1000 * time.Hour)
	got = st.sweep()
	if len(got) != 3 || !st.has("p/gateway/gw/status") || st.has("p/J/D0/temperature") {
		t.Fatalf("sweep cleared %v; want D0's two topics and D3's, never the pinned status", got)
	}
	if s := st.statsNow(); s.Topics != 1 || s.Devices != 1 || s.Bytes != 6 || s.ExpiredDevices != 3 || s.ExpiredTopics != 4 {
		t.Fatalf("stats %+v, want only the status left, 3 devices (4 topics) expired", s)
	}
}
