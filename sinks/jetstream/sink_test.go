package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"wittra-gateway/internal/natstest"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

const waitLong = 60 * time.Second

func startCluster(t testing.TB, nodes int) *natstest.Cluster {
	t.Helper()
	c, err := natstest.Start(natstest.Options{Nodes: nodes, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newSink(t testing.TB, cfg Config) (*Sink, *testutil.LogBuffer) {
	t.Helper()
	log, buf := testutil.Logger(t)
	if cfg.GatewayID == "" {
		cfg.GatewayID = "gw1"
	}
	s, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s, buf
}

// messages makes n messages spread round-robin over devices, each with a
// unique payloadId "p-<seq>" and its seq in the body.
func messages(from, n, devices int) []sinks.Message {
	var out []sinks.Message
	for i := from; i < from+n; i++ {
		dev := fmt.Sprintf("dev.%03d", i%devices) // a dot: escaped in the subject
		body := fmt.Sprintf(`{"deviceId":%q,"projectId":"P1","payloadId":"p-%d","seq":%d,"payload":{"temperature":21.5}}`, dev, i, i)
		out = append(out, sinks.Message{Seq: uint64(i), Received: time.Unix(1700000000, int64(i)), Project: "P1", Device: dev, Kind: sinks.KindData, Body: []byte(body)})
	}
	return out
}

// background is a deliver running in its own goroutine, bounded by 2×waitLong.
type background struct {
	ctx      context.Context
	progress atomic.Int64 // messages delivered so far
	done     chan int     // the failed attempts, once all are delivered
}

func startDeliver(t *testing.T, s *Sink, msgs []sinks.Message, batch int) *background {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLong)
	t.Cleanup(cancel)
	d := &background{ctx: ctx, done: make(chan int, 1)}
	go func() { d.done <- deliver(ctx, t, s, msgs, batch, &d.progress) }()
	return d
}

// reach waits until n messages are delivered or the time is up.
func (d *background) reach(n int64) {
	for d.progress.Load() < n && d.ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
}

// deliver publishes msgs in batches the way bridge.Forwarder does: each
// attempt bounded, the undelivered suffix retried until all are
// delivered or ctx ends. It returns the number of failed attempts.
func deliver(ctx context.Context, t testing.TB, s *Sink, msgs []sinks.Message, batch int, progress *atomic.Int64) int {
	failures := 0
	var lastErr error
	for len(msgs) > 0 {
		if ctx.Err() != nil {
			t.Errorf("not delivered in time: %d left; last error: %v", len(msgs), lastErr)
			return failures
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := s.Publish(actx, msgs[:min(batch, len(msgs))])
		cancel()
		if errors.Is(err, sinks.ErrPermanent) {
			t.Errorf("message %d refused permanently: %v", msgs[n].Seq, err)
			return failures
		}
		msgs = msgs[n:]
		if progress != nil {
			progress.Add(int64(n))
		}
		if err != nil {
			failures++
			lastErr = err
			time.Sleep(50 * time.Millisecond)
		}
	}
	return failures
}

// stored is one message read back from the stream.
type stored struct {
	seq     uint64
	subject string
	msgID   string
	body    struct {
		PayloadID string `json:"payloadId"`
		DeviceID  string `json:"deviceId"`
		Seq       int    `json:"seq"`
	}
}

// readStream reads every message of the stream in stream order, through
// any live node.
func readStream(t testing.TB, c *natstest.Cluster, name string) []stored {
	t.Helper()
	var urls []string
	for i := range c.Nodes() {
		if c.Running(i) {
			urls = append(urls, c.ClientURL(i))
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitLong) // after a node loss under a loaded machine the cluster may take a while to elect leaders again
	defer cancel()
	var (
		info *jetstream.StreamInfo
		cons jetstream.Consumer
	)
	var lastErr error
	for {
		// Right after a node loss or a cut the stream, or the cluster's
		// meta leader, may be electing a leader: "no responders" then, or
		// no answer at all from a node that has none yet. Each attempt
		// has its own short deadline, so one unanswered request does not
		// use up the whole wait.
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := js.Stream(actx, name)
		if err == nil {
			if info, err = st.Info(actx); err == nil {
				cons, err = st.OrderedConsumer(actx, jetstream.OrderedConsumerConfig{})
			}
		}
		acancel()
		if err == nil {
			break
		}
		lastErr = err
		if ctx.Err() != nil {
			t.Fatalf("stream %s: %v (last attempt: %v)", name, ctx.Err(), lastErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	total := info.State.Msgs
	var out []stored
	for uint64(len(out)) < total {
		batch, err := cons.Fetch(int(min(500, total-uint64(len(out)))), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			if errors.Is(err, nats.ErrNoResponders) && ctx.Err() == nil {
				time.Sleep(200 * time.Millisecond) // a leader election after the cuts
				continue
			}
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, _ := m.Metadata()
			var s stored
			s.seq = md.Sequence.Stream
			s.subject = m.Subject()
			s.msgID = m.Headers().Get(jetstream.MsgIDHeader)
			if err := json.Unmarshal(m.Data(), &s.body); err != nil {
				t.Fatalf("stream message %d: %v", s.seq, err)
			}
			out = append(out, s)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			if !errors.Is(err, nats.ErrNoResponders) || ctx.Err() != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got == 0 && ctx.Err() != nil {
			t.Fatalf("read %d of %d stream messages", len(out), total)
		}
	}
	return out
}

// checkStream wants every message of want exactly once in the stream, on
// its subject, with its payloadId as Nats-Msg-Id, and each device's
// messages in order.
func checkStream(t *testing.T, got []stored, want []sinks.Message) {
	t.Helper()
	count := map[string]int{}
	lastSeq := map[string]int{}
	inversions := 0
	for _, s := range got {
		count[s.body.PayloadID]++
		if s.msgID != s.body.PayloadID {
			t.Errorf("stream seq %d: Nats-Msg-Id %q, payloadId %q", s.seq, s.msgID, s.body.PayloadID)
		}
		if want := "wittra.P1." + EscapeToken(s.body.DeviceID) + ".data"; s.subject != want {
			t.Errorf("stream seq %d: subject %q, want %q", s.seq, s.subject, want)
		}
		if prev, ok := lastSeq[s.body.DeviceID]; ok && s.body.Seq < prev {
			inversions++
			if inversions <= 5 {
				t.Errorf("device %s: message %d stored after %d", s.body.DeviceID, s.body.Seq, prev)
			}
		}
		lastSeq[s.body.DeviceID] = s.body.Seq
	}
	missing, dups := 0, 0
	for _, m := range want {
		id := fmt.Sprintf("p-%d", m.Seq)
		switch c := count[id]; {
		case c == 0:
			missing++
		case c > 1:
			dups++
		}
	}
	if missing > 0 || dups > 0 || len(got) != len(want) || inversions > 0 {
		t.Errorf("stream holds %d messages for %d sent: %d missing, %d stored more than once, %d order inversions", len(got), len(want), missing, dups, inversions)
	}
}

func TestSingleServer(t *testing.T) {
	c := startCluster(t, 1)
	s, log := newSink(t, Config{URLs: []string{c.ClientURL(0)}})
	msgs := messages(1, 500, 7)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if f := deliver(ctx, t, s, msgs, 200, nil); f != 0 {
		t.Errorf("%d failed attempts against a healthy server", f)
	}
	if !strings.Contains(log.String(), `"replicas":1`) || !strings.Contains(log.String(), "not in a cluster") {
		t.Errorf("stream not created with 1 replica for a single server:\n%s", log.String())
	}
	// A restart that republishes what was delivered: the stream drops
	// every copy, and each copy counts as delivered.
	s2, log2 := newSink(t, Config{URLs: []string{c.ClientURL(0)}})
	if n, err := s2.Publish(ctx, msgs[100:300]); n != 200 || err != nil {
		t.Fatalf("republish: %d, %v; want 200 delivered as duplicates", n, err)
	}
	if !strings.Contains(log2.String(), `"duplicates":200`) {
		t.Errorf("the 200 duplicates are not logged:\n%s", log2.String())
	}
	checkStream(t, readStream(t, c, DefaultStream), msgs)
}

func TestOwnMsgIDWithoutPayloadID(t *testing.T) {
	c := startCluster(t, 1)
	s, _ := newSink(t, Config{URLs: []string{c.ClientURL(0)}, GatewayID: "site-a"})
	m := sinks.Message{Seq: 9, Received: time.Unix(1700000000, 0), Project: "P1", Device: "D1", Kind: sinks.KindEvent, Body: []byte(`{"deviceId":"D1","payloadType":"EVENT"}`)}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for range 3 { // the same queue record delivered three times
		if n, err := s.Publish(ctx, []sinks.Message{m}); n != 1 || err != nil {
			t.Fatalf("Publish: %d, %v", n, err)
		}
	}
	got := readStream(t, c, DefaultStream)
	if len(got) != 1 || got[0].msgID != "wittra-gw:site-a:9:1700000000000000000" || got[0].subject != "wittra.P1.D1.event" {
		t.Fatalf("stream = %+v, want one message with the gateway's own id on wittra.P1.D1.event", got)
	}
}

func TestTooLargeIsPermanent(t *testing.T) {
	c := startCluster(t, 1)
	s, _ := newSink(t, Config{URLs: []string{c.ClientURL(0)}})
	ok := messages(1, 2, 2)
	big := messages(3, 1, 1)[0]
	big.Body = []byte(`{"payloadId":"big","x":"` + strings.Repeat("a", 2<<20) + `"}`)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	n, err := s.Publish(ctx, append(ok, big))
	if n != 2 || !errors.Is(err, sinks.ErrPermanent) {
		t.Fatalf("Publish = %d, %v; want 2 and a permanent refusal of the third", n, err)
	}
}

func TestExistingStreamNotCapturing(t *testing.T) {
	c := startCluster(t, 1)
	nc, err := nats.Connect(c.ClientURL(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	s, _ := newSink(t, Config{URLs: []string{c.ClientURL(0)}})
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	defer pcancel()
	n, err := s.Publish(pctx, messages(1, 3, 1))
	if n != 0 || err == nil || !strings.Contains(err.Error(), "do not capture wittra.>") || errors.Is(err, sinks.ErrPermanent) {
		t.Fatalf("Publish = %d, %v; want 0 and a transient error naming the subjects", n, err)
	}
}

// TestClusterNodeLoss publishes into an R=3 stream of a 3-node cluster and
// shuts the stream's leader down under load, then brings it back and
// shuts another node down: every message is in the stream once, in
// order per device.
func TestClusterNodeLoss(t *testing.T) {
	t0 := time.Now()
	c := startCluster(t, 3)
	t.Logf("cluster up in %v", time.Since(t0).Round(time.Millisecond))
	// A short AckTimeout: the publications in flight to a node that went
	// away are only failed by it.
	s, log := newSink(t, Config{URLs: c.ClientURLs(), Window: 128, AckTimeout: 2 * time.Second})
	msgs := messages(1, 3000, 40)
	d := startDeliver(t, s, msgs, 100)

	// The stream exists once the first batch is delivered.
	d.reach(100)
	if !strings.Contains(log.String(), `"replicas":3`) {
		t.Fatalf("stream not created with 3 replicas:\n%s", log.String())
	}
	d.reach(1000)
	leader := c.StreamLeader(DefaultStream)
	if leader < 0 {
		t.Fatal("no stream leader")
	}
	began := time.Now()
	c.Shutdown(leader)
	t.Logf("shut down stream leader n%d at %d delivered", leader, d.progress.Load())
	d.reach(d.progress.Load() + 500)
	t.Logf("500 more delivered %v after the leader loss", time.Since(began).Round(time.Millisecond))
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	d.reach(2000)
	// The restarted node must have caught up before another goes: with a
	// lagging replica and one node down the stream has no quorum, and it
	// stays without one (CI saw the stream unreadable for 3 minutes).
	testutil.WaitFor(t, waitLong, "restarted node's replica current", func() bool { return c.StreamCurrent(leader, DefaultStream) })
	other := (leader + 1) % 3
	c.Shutdown(other)
	t.Logf("shut down n%d at %d delivered", other, d.progress.Load())
	failures := <-d.done
	t.Logf("delivered %d with %d failed attempts in %v", d.progress.Load(), failures, time.Since(began).Round(time.Millisecond))

	checkStream(t, readStream(t, c, DefaultStream), msgs)
}

// TestWholeClusterDown stops every node mid-stream and starts them again
// 2 s later: the sink waits, then finishes, everything exactly once.
func TestWholeClusterDown(t *testing.T) {
	c := startCluster(t, 3)
	s, _ := newSink(t, Config{URLs: c.ClientURLs(), AckTimeout: 2 * time.Second})
	msgs := messages(1, 2000, 25)
	d := startDeliver(t, s, msgs, 100)
	d.reach(600)
	began := time.Now()
	c.Close()
	t.Logf("cluster down at %d delivered", d.progress.Load())
	time.Sleep(2 * time.Second)
	if s.Connected() {
		t.Error("sink says connected with every server down")
	}
	for i := range 3 {
		go func() {
			if err := c.Restart(i); err != nil {
				t.Error(err)
			}
		}()
	}
	failures := <-d.done
	t.Logf("all delivered %v after the cluster went down, %d failed attempts", time.Since(began).Round(time.Millisecond), failures)
	if failures == 0 {
		t.Error("no Publish failed: the outage did not hit the stream")
	}
	checkStream(t, readStream(t, c, DefaultStream), msgs)
}

// TestConnectionCut resets the sink's connection three times mid-stream,
// with acknowledgements in flight: every node sits behind a TCP proxy and
// advertises no other address, and each cut resets every proxied
// connection.
func TestConnectionCut(t *testing.T) {
	c, err := natstest.Start(natstest.Options{Nodes: 3, Dir: t.TempDir(), NoAdvertise: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var proxies []*testutil.Proxy
	var urls []string
	for i := range 3 {
		p := testutil.StartProxy(t, strings.TrimPrefix(c.ClientURL(i), "nats://"))
		proxies = append(proxies, p)
		urls = append(urls, "nats://"+p.Addr())
	}
	s, log := newSink(t, Config{URLs: urls, AckTimeout: 2 * time.Second})
	msgs := messages(1, 3000, 30)
	d := startDeliver(t, s, msgs, 200)
	for k := int64(1); k <= 3; k++ {
		d.reach(k * int64(len(msgs)) / 4)
		for _, p := range proxies {
			p.Cut()
		}
	}
	failures := <-d.done
	reconnects := strings.Count(log.String(), "reconnected to NATS")
	t.Logf("%d failed attempts; %d reconnects", failures, reconnects)
	if reconnects < 3 {
		t.Errorf("%d reconnects logged, want 3: the cuts did not all reach the sink", reconnects)
	}
	checkStream(t, readStream(t, c, DefaultStream), msgs)
}
