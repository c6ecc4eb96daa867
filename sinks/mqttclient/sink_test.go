//go:build unix

package mqttclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"wittra-gateway/internal/testpki"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

// byDevice returns the payloads that arrived on each device's data topic.
func byDevice(got []testutil.Received) map[string][]string {
	out := make(map[string][]string)
	for _, r := range got {
		parts := strings.Split(r.Topic, "/")
		if len(parts) == 4 && parts[3] == "data" {
			out[parts[2]] = append(out[parts[2]], r.Payload)
		}
	}
	return out
}

func countData(got []testutil.Received) int {
	n := 0
	for _, r := range got {
		if strings.HasSuffix(r.Topic, "/data") {
			n++
		}
	}
	return n
}

func TestPublishInOrder(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{})
	sub := testutil.Subscribe(t, m.URL(), DefaultTopicPrefix+"/"+testProject+"/#", 1, testutil.SubscriberOptions{})
	s, _ := newSink(t, Config{URL: m.URL(), QoS: 1})

	msgs := messages(1000, "D1", "D2")
	publishAll(t, s, msgs[:400]) // two calls: the window state must carry over cleanly
	publishAll(t, s, msgs[400:])

	got := sub.WaitFor(t, waitLong, "1000 messages", func(r []testutil.Received) bool { return countData(r) >= len(msgs) })
	if n := countData(got); n != len(msgs) {
		t.Errorf("received %d data messages, want %d (no reconnect, so no duplicates)", n, len(msgs))
	}
	want := byDevice(nil)
	for _, msg := range msgs {
		want[msg.Device] = append(want[msg.Device], string(msg.Body))
	}
	have := byDevice(got)
	for dev, w := range want {
		h := have[dev]
		if len(h) != len(w) {
			t.Errorf("device %s: %d messages, want %d", dev, len(h), len(w))
			continue
		}
		for i := range w {
			if h[i] != w[i] {
				t.Errorf("device %s message %d:\n got %q\nwant %q", dev, i, h[i], w[i])
				break
			}
		}
	}
}

func TestPublishValues(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{})
	sub := testutil.Subscribe(t, m.URL(), DefaultTopicPrefix+"/"+testProject+"/#", 1, testutil.SubscriberOptions{})
	s, logs := newSink(t, Config{URL: m.URL(), QoS: 1, Values: true})

	body, err := os.ReadFile(filepath.Join("..", "..", "wittra", "testdata", "f1_data_tag.json"))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	good := sinks.Message{Seq: 1, Project: testProject, Device: "D3", Kind: sinks.KindData, Body: body}
	// A payloadType that is no string: its values cannot be computed, but
	// the message itself is still published and counts as delivered.
	bad := sinks.Message{Seq: 2, Project: testProject, Device: "D4", Kind: sinks.KindData, Body: []byte(`{"deviceId":"D4","payloadType":5}`)}
	publishAll(t, s, []sinks.Message{good, bad})

	want, err := sinks.Publications(nil, DefaultTopicPrefix, good, true)
	if err != nil {
		t.Fatalf("Publications: %v", err)
	}
	if len(want) < 5 {
		t.Fatalf("fixture gives only %d publications; want a message with values", len(want))
	}
	want = append(want, sinks.Publication{Topic: dataTopic("D4"), Payload: bad.Body})
	got := sub.WaitFor(t, waitLong, "all publications", func(r []testutil.Received) bool { return len(r) >= len(want) })
	if len(got) != len(want) {
		t.Errorf("received %d publications, want %d", len(got), len(want))
	}
	seen := make(map[string]string)
	for _, r := range got {
		seen[r.Topic] = r.Payload
	}
	for _, p := range want {
		if v, ok := seen[p.Topic]; !ok {
			t.Errorf("topic %s: nothing received", p.Topic)
		} else if v != string(p.Payload) {
			t.Errorf("topic %s = %q, want %q", p.Topic, v, p.Payload)
		}
	}
	if !strings.Contains(logs.String(), "values not published") {
		t.Errorf("no warning about the values that could not be computed; log:\n%s", logs)
	}
}

func TestStatus(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{})
	s, _ := newSink(t, Config{URL: m.URL()})
	waitConnected(t, s)
	status := sinks.StatusTopic(DefaultTopicPrefix, testGateway)

	// A late subscriber gets the retained "online".
	late := testutil.Subscribe(t, m.URL(), status, 1, testutil.SubscriberOptions{})
	late.WaitFor(t, waitLong, "retained online", func(r []testutil.Received) bool {
		return len(r) > 0 && r[len(r)-1].Payload == "online" && r[len(r)-1].Retain
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	late.WaitFor(t, waitLong, "offline after Close", func(r []testutil.Received) bool {
		return r[len(r)-1].Payload == "offline"
	})
	after := testutil.Subscribe(t, m.URL(), status, 1, testutil.SubscriberOptions{})
	after.WaitFor(t, waitLong, "retained offline", func(r []testutil.Received) bool {
		return len(r) > 0 && r[0].Payload == "offline" && r[0].Retain
	})
	if n, err := s.Publish(ctx, messages(1, "D1")); n != 0 || !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %d, %v; want 0, ErrClosed", n, err)
	}
}

// TestWill cuts the sink's connection without a DISCONNECT (through a TCP
// proxy): the broker publishes the will "offline", and the sink, once
// reconnected, "online" again.
func TestWill(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{})
	p := testutil.StartProxy(t, fmt.Sprintf("127.0.0.1:%d", m.Port))
	status := sinks.StatusTopic(DefaultTopicPrefix, testGateway)
	sub := testutil.Subscribe(t, m.URL(), status, 1, testutil.SubscriberOptions{})
	s, logs := newSink(t, Config{URL: "tcp://" + p.Addr()})
	waitConnected(t, s)
	sub.WaitFor(t, waitLong, "online", func(r []testutil.Received) bool { return len(r) > 0 && r[len(r)-1].Payload == "online" })

	before := len(sub.Messages())
	p.Cut()
	got := sub.WaitFor(t, waitLong, "will offline, then online", func(r []testutil.Received) bool {
		offline := false
		for _, x := range r[before:] {
			offline = offline || x.Payload == "offline"
			if offline && x.Payload == "online" {
				return true
			}
		}
		return false
	})
	t.Logf("status sequence: %v", got)
	publishAll(t, s, messages(10, "D1"))
	for _, want := range []string{"connection to broker lost", "reconnected to broker"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// stream publishes msgs through a sink as bridge.Forwarder does: in
// batches, retrying the undelivered suffix after a short sleep.
type stream struct {
	mu      sync.Mutex
	claimed []uint64 // what Publish said was delivered, in order
	fails   int      // Publish calls that returned an error
	done    chan error
}

func startStream(ctx context.Context, s *Sink, msgs []sinks.Message, batch int) *stream {
	st := &stream{done: make(chan error, 1)}
	go func() {
		for rest := msgs; len(rest) > 0; {
			b := rest[:min(batch, len(rest))]
			for len(b) > 0 {
				n, err := s.Publish(ctx, b)
				st.mu.Lock()
				for _, msg := range b[:n] {
					st.claimed = append(st.claimed, msg.Seq)
				}
				if err != nil {
					st.fails++
				}
				st.mu.Unlock()
				rest, b = rest[n:], b[n:]
				if err != nil {
					if ctx.Err() != nil {
						st.done <- err
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}
		st.done <- nil
	}()
	return st
}

func (st *stream) delivered() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.claimed)
}

// checkStream waits for the stream to end and for sub to have every
// message, then checks per-device order of first arrivals and that every
// message Publish claimed delivered arrived. Duplicates are allowed.
// reorder: how far back (in sequence) a first arrival may lie behind the
// device's latest one (0: strict order).
func checkStream(t *testing.T, st *stream, sub *testutil.Subscriber, msgs []sinks.Message, reorder uint64) {
	t.Helper()
	if err := <-st.done; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	seqOf := make(map[string]uint64, len(msgs))
	for _, msg := range msgs {
		seqOf[string(msg.Body)] = msg.Seq
	}
	got := sub.WaitFor(t, waitLong, "every message", func(r []testutil.Received) bool {
		seen := make(map[uint64]bool, len(msgs))
		for _, x := range r {
			seen[seqOf[x.Payload]] = true
		}
		return len(seen) == len(msgs) && !seen[0]
	})
	first := make(map[uint64]bool, len(msgs))
	last := make(map[string]uint64) // per device: the last first arrival
	dups, reordered := 0, 0
	for _, r := range got {
		n, ok := seqOf[r.Payload]
		if !ok {
			t.Fatalf("unknown payload %q", r.Payload)
		}
		if first[n] {
			dups++
			continue
		}
		first[n] = true
		dev := strings.Split(r.Topic, "/")[2]
		if n < last[dev] {
			if n+reorder < last[dev] {
				t.Errorf("device %s: message %d first arrived after %d", dev, n, last[dev])
			}
			reordered++
			continue
		}
		last[dev] = n
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, n := range st.claimed {
		if !first[n] {
			t.Errorf("message %d reported delivered but never received", n)
		}
	}
	if len(st.claimed) != len(msgs) {
		t.Errorf("Publish reported %d messages delivered, want %d", len(st.claimed), len(msgs))
	}
	if st.fails == 0 {
		t.Error("no Publish failed: the outage did not hit the stream")
	}
	t.Logf("%d messages, %d duplicates, %d first arrived behind later ones, %d failed Publish calls", len(msgs), dups, reordered, st.fails)
}

// TestOutage stops mosquitto for 3 s in the middle of a stream, then
// restarts it on the same port. mosquitto persists sessions (saved at
// SIGTERM), so the subscriber misses nothing the broker acknowledged.
func TestOutage(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{Persistence: true})
	sub := testutil.Subscribe(t, m.URL(), DefaultTopicPrefix+"/"+testProject+"/+/data", 1,
		testutil.SubscriberOptions{Persistent: true, Reconnect: true, ClientID: "outage-subscriber"})
	s, _ := newSink(t, Config{URL: m.URL(), QoS: 1, AckTimeout: 5 * time.Second})
	waitConnected(t, s)

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	msgs := messages(1500, "D1", "D2")
	start := time.Now()
	// About 40 ms a call: mosquitto does not set TCP_NODELAY by default.
	st := startStream(ctx, s, msgs, 25)
	time.Sleep(500 * time.Millisecond)
	m.Stop(syscall.SIGTERM)
	t.Logf("%v: mosquitto stopped after %d messages were delivered", time.Since(start), st.delivered())
	time.Sleep(3 * time.Second)
	m.Start()
	t.Logf("%v: mosquitto restarted", time.Since(start))
	checkStream(t, st, sub, msgs, 0)
	t.Logf("%v: subscriber has every message", time.Since(start))
}

// TestCutMidStream resets the sink's connection (through a TCP proxy)
// several times during a stream: paho reconnects at once and resends what
// was in flight while the forwarder retries, which must neither lose
// messages nor break per-device order.
func TestCutMidStream(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{NoDelay: true})
	p := testutil.StartProxy(t, fmt.Sprintf("127.0.0.1:%d", m.Port))
	sub := testutil.Subscribe(t, m.URL(), DefaultTopicPrefix+"/"+testProject+"/+/data", 1, testutil.SubscriberOptions{})
	s, logs := newSink(t, Config{URL: "tcp://" + p.Addr(), QoS: 1, Window: 64})
	waitConnected(t, s)

	// A budget for a loaded machine, not a speed target; if it runs out,
	// checkStream says what was missing.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	msgs := messages(20000, "D1", "D2", "D3")
	st := startStream(ctx, s, msgs, 200)
	for k := 1; k <= 3; k++ { // cut at 1/4, 2/4 and 3/4 of the stream
		for st.delivered() < k*len(msgs)/4 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		p.Cut()
	}
	checkStream(t, st, sub, msgs, 0)
	// At least one reconnect per cut; a loaded machine may see a cut land
	// on a connection being set up, and one more reconnect.
	if n := strings.Count(logs.String(), "reconnected to broker"); n < 3 {
		t.Errorf("%d reconnects logged, want at least 3 (one per cut)", n)
	}
}

func TestBrokerDownAtStart(t *testing.T) {
	m := testutil.NewMosquitto(t, testutil.MosquittoOptions{})
	s, _ := newSink(t, Config{URL: m.URL()}) // nothing listens yet
	if s.Connected() {
		t.Fatal("Connected with no broker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	msgs := messages(5, "D1")
	start := time.Now()
	n, err := s.Publish(ctx, msgs)
	if n != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish with no broker = %d, %v; want 0, context.DeadlineExceeded", n, err)
	}
	// It must give up because of ctx, not hang; how soon depends on the
	// machine's load, so the bound is loose.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Publish took %v to give up; ctx said 500ms", d)
	}
	t.Logf("error while down: %v", err)

	m.Start()
	sub := testutil.Subscribe(t, m.URL(), dataTopic("D1"), 1, testutil.SubscriberOptions{})
	publishAll(t, s, msgs)
	sub.WaitFor(t, waitLong, "messages after the broker came up", func(r []testutil.Received) bool { return len(r) == len(msgs) })
}

func TestAuth(t *testing.T) {
	tool, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skip("mosquitto_passwd is not installed")
	}
	const user, pass = "gw", "s3cret-Pa55"
	pwfile := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command(tool, "-b", "-c", pwfile, user, pass).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{PasswordFile: pwfile})
	sub := testutil.Subscribe(t, m.URL(), dataTopic("D1"), 1, testutil.SubscriberOptions{Username: user, Password: pass})

	t.Run("WrongPassword", func(t *testing.T) {
		s, logs := newSink(t, Config{URL: m.URL(), Username: user, Password: "wrong-Pa55"})
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		n, err := s.Publish(ctx, messages(3, "D1"))
		if n != 0 || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Publish = %d, %v; want 0, context.DeadlineExceeded", n, err)
		}
		if !strings.Contains(err.Error(), "not Authorized") {
			t.Errorf("error %q does not say why the connection fails", err)
		}
		if l := logs.String(); strings.Contains(l, "wrong-Pa55") || !strings.Contains(l, "not Authorized") {
			t.Errorf("log should name the refusal and never the password:\n%s", l)
		}
	})
	t.Run("RightPassword", func(t *testing.T) {
		s, logs := newSink(t, Config{URL: m.URL(), Username: user, Password: pass})
		msgs := messages(3, "D1")
		publishAll(t, s, msgs)
		sub.WaitFor(t, waitLong, "messages", func(r []testutil.Received) bool { return len(r) == len(msgs) })
		if strings.Contains(logs.String(), pass) {
			t.Errorf("password logged:\n%s", logs)
		}
	})
}

// writeTestPKI writes a CA and a server certificate for 127.0.0.1 signed
// by it into dir.
func writeTestPKI(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	authority := testpki.NewCA(t, "wittra test CA")
	ca = filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, ca, authority.PEM)
	cert, key = authority.Server(t).Write(t, dir, "server")
	return ca, cert, key
}

func TestTLS(t *testing.T) {
	ca, cert, key := writeTestPKI(t, t.TempDir())
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{TLS: true, CA: ca, Cert: cert, Key: key})
	sub := testutil.Subscribe(t, m.URL(), dataTopic("D1"), 1, testutil.SubscriberOptions{})
	tlsURL := fmt.Sprintf("ssl://127.0.0.1:%d", m.TLSPort)

	t.Run("WithCA", func(t *testing.T) {
		s, _ := newSink(t, Config{URL: tlsURL, TLS: TLSConfig{CAFile: ca}})
		msgs := messages(3, "D1")
		publishAll(t, s, msgs)
		sub.WaitFor(t, waitLong, "messages over TLS", func(r []testutil.Received) bool { return len(r) == len(msgs) })
	})
	t.Run("WithoutCA", func(t *testing.T) {
		s, _ := newSink(t, Config{URL: tlsURL})
		// Each attempt must fail; the error names the certificate once the
		// first TLS handshake was refused (however long a loaded machine
		// takes to get there).
		var err error
		for deadline := time.Now().Add(waitLong); ; {
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			var n int
			n, err = s.Publish(ctx, messages(1, "D1"))
			cancel()
			if n != 0 || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Publish = %d, %v; want 0, context.DeadlineExceeded", n, err)
			}
			if strings.Contains(err.Error(), "certificate") || time.Now().After(deadline) {
				break
			}
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("error %q does not name the certificate problem", err)
		}
	})
}

func TestQoS0And2(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{})
	for _, qos := range []byte{0, 2} {
		t.Run(fmt.Sprintf("QoS%d", qos), func(t *testing.T) {
			dev := fmt.Sprintf("Q%d", qos)
			sub := testutil.Subscribe(t, m.URL(), dataTopic(dev), 2, testutil.SubscriberOptions{})
			s, _ := newSink(t, Config{URL: m.URL(), QoS: qos})
			msgs := messages(300, dev)
			publishAll(t, s, msgs)
			got := sub.WaitFor(t, waitLong, "messages", func(r []testutil.Received) bool { return len(r) >= len(msgs) })
			for i := range msgs {
				if got[i].Payload != string(msgs[i].Body) {
					t.Fatalf("message %d = %q, want %q", i, got[i].Payload, msgs[i].Body)
				}
			}
		})
	}
}

// TestAckTimeout freezes mosquitto (SIGSTOP): no PUBACK comes, so Publish
// gives up after AckTimeout, the sink drops the connection, and once the
// broker runs again (SIGCONT) it reconnects and delivers.
func TestAckTimeout(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{})
	sub := testutil.Subscribe(t, m.URL(), dataTopic("D1"), 1, testutil.SubscriberOptions{})
	s, logs := newSink(t, Config{URL: m.URL(), QoS: 1, AckTimeout: time.Second})
	waitConnected(t, s)
	msgs := messages(50, "D1")

	m.Signal(syscall.SIGSTOP)
	cont := sync.OnceFunc(func() { m.Signal(syscall.SIGCONT) })
	t.Cleanup(cont)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	start := time.Now()
	n, err := s.Publish(ctx, msgs)
	if n == len(msgs) || !errors.Is(err, ErrAckTimeout) {
		t.Fatalf("Publish to a frozen broker = %d, %v; want fewer than %d, ErrAckTimeout", n, err, len(msgs))
	}
	if d := time.Since(start); d < time.Second || d > 3*time.Second {
		t.Errorf("Publish gave up after %v; AckTimeout is 1s", d)
	}
	cont()
	publishAll(t, s, msgs[n:])
	sub.WaitFor(t, waitLong, "every message", func(r []testutil.Received) bool {
		seen := make(map[string]bool)
		for _, x := range r {
			seen[x.Payload] = true
		}
		for _, msg := range msgs {
			if !seen[string(msg.Body)] {
				return false
			}
		}
		return true
	})
	if !strings.Contains(logs.String(), "dropped the connection to broker") {
		t.Errorf("log does not report the dropped connection:\n%s", logs)
	}
}

// TestCloseWhileWaiting: Close wakes a Publish that waits for a connection.
func TestCloseWhileWaiting(t *testing.T) {
	m := testutil.NewMosquitto(t, testutil.MosquittoOptions{}) // never started
	s, _ := newSink(t, Config{URL: m.URL()})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Publish(context.Background(), messages(1, "D1"))
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close of an unconnected sink took %v", d)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Publish = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Publish still waiting after Close")
	}
}

// BenchmarkPublishToMosquitto publishes batches of 1000 messages of 200
// bytes at QoS 1 with the default window, as the forwarder does. With
// mosquitto's default (Nagle on) each batch ends with a delayed-ACK stall of
// up to 40 ms; set_tcp_nodelay true removes it.
func BenchmarkPublishToMosquitto(b *testing.B) {
	for _, bc := range []struct {
		name    string
		nodelay bool
	}{{"default", false}, {"tcp_nodelay", true}} {
		b.Run(bc.name, func(b *testing.B) {
			m := testutil.StartMosquitto(b, testutil.MosquittoOptions{NoDelay: bc.nodelay})
			s, _ := newSink(b, Config{URL: m.URL(), QoS: 1})
			waitConnected(b, s)
			batch := make([]sinks.Message, 1000)
			for i := range batch {
				batch[i] = message(fmt.Sprintf("D%d", i%10), 200)
			}
			if len(batch[0].Body) != 200 {
				b.Fatalf("body is %d bytes, want 200", len(batch[0].Body))
			}
			ctx := context.Background()
			b.SetBytes(int64(len(batch) * 200))
			for b.Loop() {
				if n, err := s.Publish(ctx, batch); n != len(batch) || err != nil {
					b.Fatalf("Publish = %d, %v", n, err)
				}
			}
			b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
