package main

// Crash tests of the built binary (docs/contract.md#delivery: "a webhook 200 means the message
// survives kill -9", at-least-once delivery; docs/contract.md#operations: clean stop on SIGTERM).
//
// Each test builds cmd/gateway, runs it as a subprocess on loopback with one
// `type: broker` sink (retain on, values off), loads it with concurrent
// webhook posters and kills it. Every message has a unique payloadId and a
// unique device, so each has its own retained topic: a subscriber that
// connects after a start receives, as retained messages, everything the
// gateway published since that start (the embedded broker keeps retained
// messages in memory only), plus live publications. A message acknowledged
// in the queue cursor is not republished after a restart, so each phase's
// subscriber is connected before that phase's load starts; the union of what
// all subscribers received must contain every payloadId that got a 200.
//
// Ports: crashFreeAddrs binds 127.0.0.1:0 and closes the listeners before the
// gateway binds them, and the gateway rebinds them after each kill; another
// process could take one in between (a tiny race, accepted in tests).
//
// Everything here is prefixed crash so it cannot clash with the other test
// files of package main.

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"

	paho "github.com/eclipse/paho.mqtt.golang"
)

const (
	crashKillCycles     = 3
	crashPosters        = 16
	crashMinLoad        = 1500 * time.Millisecond // load time before a kill
	crashMaxLoad        = 8 * time.Second         // cap on load time while waiting for crashMinAcked
	crashMinAcked       = 300                     // 200s wanted in a phase before the kill
	crashMaxPostsEach   = 100000                  // per poster and phase
	crashExitTimeout    = 10 * time.Second        // docs/contract.md#operations
	crashDeliverTimeout = 30 * time.Second
	crashDataFilter     = "wittra/+/+/data"
	crashAckedBody      = `{"accepted":1,"duplicates":0}`
)

// TestCrashKill9KeepsEveryAcceptedMessage kills the gateway with SIGKILL
// under webhook load three times on the same queue file, then restarts it
// and checks that every message that got a 200 reached an MQTT subscriber.
func TestCrashKill9KeepsEveryAcceptedMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("long crash test; skipped with -short")
	}
	began := time.Now()
	h := crashNewHarness(t)
	for cycle := 1; cycle <= crashKillCycles; cycle++ {
		h.crashKillCycle(cycle)
	}
	g := h.crashVerifyDelivered("final")
	h.crashStopClean(g)
	t.Logf("kill cycles %d, gateway starts %d, total %v", crashKillCycles, h.starts, time.Since(began).Round(time.Millisecond))
}

// TestCrashStopUnderLoadSIGTERM stops the gateway with SIGTERM while
// webhooks keep arriving: it must exit 0 within 10 s, and after a restart
// every message that got a 200 must have reached a subscriber.
func TestCrashStopUnderLoadSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("long crash test; skipped with -short")
	}
	began := time.Now()
	h := crashNewHarness(t)
	g := h.crashStart()
	sub := h.crashSubscribe("sigterm")
	load := h.crashStartLoad(crashPosters)
	h.crashLoadFor(g, load, time.Second, 100)

	sent := time.Now()
	if err := g.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		load.crashHalt()
		t.Fatalf("send SIGTERM: %v", err)
	}
	exited := g.WaitExit(crashExitTimeout) // the posters keep posting meanwhile
	load.crashHalt()
	if !exited {
		t.Fatalf("gateway did not exit within %v of SIGTERM under load", crashExitTimeout)
	}
	if code := g.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code after SIGTERM under load = %d (%v), want 0", code, g.Err)
	}
	t.Logf("SIGTERM under load: exited 0 after %v; phase: %s", time.Since(sent).Round(time.Millisecond), load.crashSummary())
	sub.crashDrain(t)
	t.Logf("phase sigterm: subscriber received %d messages", sub.got.Load())

	g = h.crashVerifyDelivered("after-sigterm")
	h.crashStopClean(g)
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}

// crashHarness is one test's gateway setup: binary, config, queue file and
// the ids posted and received across every start.
type crashHarness struct {
	t *testing.T
	*gatewayProc
	webhookAddr string
	brokerAddr  string
	webhookURL  string

	starts int
	seq    atomic.Uint64 // message counter: unique payloadId and deviceId
	subs   atomic.Uint64 // subscriber counter: unique client ids

	acked    *testutil.IDSet // payloadIds that got 200 {"accepted":1,"duplicates":0}
	received *testutil.IDSet // payloadIds received by any subscriber, with counts

	mu        sync.Mutex
	odd200    []string          // 200 replies with an unexpected body
	badMsgs   []string          // MQTT messages without a payloadId
	statuses  map[int]int       // non-200 replies by code
	reqErrors map[string]int    // transport errors, by a short class
	errSample map[string]string // first error text of each class
}

func crashNewHarness(t *testing.T) *crashHarness {
	t.Helper()
	addrs := testutil.FreeAddrs(t, 2)
	h := &crashHarness{
		t: t,
		gatewayProc: newGatewayProc(t, "crash-gw", addrs[0], "", "data/queue.db", fmt.Sprintf(`broker:
  enabled: true
  listeners: [{type: tcp, address: %s}]
  allow_anonymous: true
sinks:
  - {name: local, type: broker, topic_prefix: wittra, values: false, retain: true}
`, addrs[1])),
		webhookAddr: addrs[0],
		brokerAddr:  addrs[1],
		webhookURL:  "http://" + addrs[0] + "/wittra",
		acked:       new(testutil.IDSet),
		received:    new(testutil.IDSet),
		statuses:    make(map[int]int),
		reqErrors:   make(map[string]int),
		errSample:   make(map[string]string),
	}
	return h
}

// crashStart starts the gateway on the harness's config and waits until
// its webhook and broker ports accept connections.
func (h *crashHarness) crashStart() *testutil.Process {
	t := h.t
	t.Helper()
	h.starts++
	return h.start(t, h.webhookAddr, h.brokerAddr)
}

// crashKillCycle is one start → subscribe → load → kill -9 cycle.
func (h *crashHarness) crashKillCycle(cycle int) {
	t := h.t
	t.Helper()
	g := h.crashStart()
	sub := h.crashSubscribe(fmt.Sprintf("cycle%d", cycle))
	load := h.crashStartLoad(crashPosters)
	// A little jitter so the kills land at different points of the
	// commit / publish / acknowledge loop.
	h.crashLoadFor(g, load, crashMinLoad+rand.N(300*time.Millisecond), crashMinAcked)

	err := g.Cmd.Process.Kill()
	load.crashHalt() // requests fail from now on; only 200s count
	if err != nil {
		t.Fatalf("kill -9: %v", err)
	}
	g.WaitKilled(t, crashExitTimeout)
	sub.crashDrain(t)
	t.Logf("cycle %d: %s; subscriber received %d; totals: acked %d, received unique %d",
		cycle, load.crashSummary(), sub.got.Load(), h.acked.Len(), h.received.Len())
}

// crashLoadFor lets load run for at least minDur and until minAcked requests
// got a 200 in this phase, at most crashMaxLoad; it fails if the gateway
// dies meanwhile or nothing was accepted.
func (h *crashHarness) crashLoadFor(g *testutil.Process, load *crashLoad, minDur time.Duration, minAcked int64) {
	t := h.t
	t.Helper()
	began := time.Now()
	for {
		if g.Exited() {
			load.crashHalt()
			t.Fatalf("gateway exited under load: %v", g.Err)
		}
		el := time.Since(began)
		if (el >= minDur && load.acked.Load() >= minAcked) || el >= crashMaxLoad {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if load.acked.Load() == 0 {
		load.crashHalt()
		t.Fatalf("no webhook got a 200 in %v: %s", time.Since(began), load.crashSummary())
	}
}

// crashVerifyDelivered starts the gateway, subscribes late and waits until
// every acknowledged payloadId was received by some subscriber; it reports
// the figures and returns the running gateway.
func (h *crashHarness) crashVerifyDelivered(name string) *testutil.Process {
	t := h.t
	t.Helper()
	g := h.crashStart()
	sub := h.crashSubscribe(name)
	began := time.Now()
	var missing []string
	for {
		missing = h.crashMissing()
		if len(missing) == 0 || time.Since(began) > crashDeliverTimeout || g.Exited() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	acked, unique, dups, total := h.acked.Len(), h.received.Len(), h.received.Repeated(), h.received.Total()
	notAcked := h.received.Minus(h.acked)
	t.Logf("%s: subscriber received %d (retained + live) in %v", name, sub.got.Load(), time.Since(began).Round(time.Millisecond))
	t.Logf("acked %d, received unique %d (%d messages), received more than once %d, received but never acked %d, missing %d",
		acked, unique, total, dups, len(notAcked), len(missing))
	h.mu.Lock()
	t.Logf("non-200 replies by code %v; transport errors %v (e.g. %q)", h.statuses, h.reqErrors, h.errSample["other"])
	odd, bad := h.odd200, h.badMsgs
	h.mu.Unlock()
	if len(odd) > 0 {
		t.Errorf("%d replies were 200 with an unexpected body (every message is new); first: %q", len(odd), odd[0])
	}
	if len(bad) > 0 {
		t.Errorf("%d MQTT messages on %s had no payloadId; first: %q", len(bad), crashDataFilter, bad[0])
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		show := missing[:min(20, len(missing))]
		t.Fatalf("%d of %d acknowledged messages (HTTP 200) never reached a subscriber within %v (received unique %d); first missing: %v",
			len(missing), acked, crashDeliverTimeout, unique, show)
	}
	if g.Exited() {
		t.Fatalf("gateway exited: %v", g.Err)
	}
	return g
}

// crashStopClean stops g with SIGTERM and wants exit code 0 within 10 s.
func (h *crashHarness) crashStopClean(g *testutil.Process) {
	h.t.Helper()
	h.t.Logf("SIGTERM: exited 0 after %v", g.StopClean(h.t, crashExitTimeout).Round(time.Millisecond))
}

// crashMissing lists the acknowledged payloadIds no subscriber received.
func (h *crashHarness) crashMissing() []string {
	return h.acked.Minus(h.received)
}

// crashSubscriber is one MQTT subscriber of the embedded broker.
type crashSubscriber struct {
	client paho.Client
	lost   chan struct{} // closed when the connection is lost
	got    atomic.Int64  // messages with a payloadId
}

// crashSubscribe connects a clean-session QoS 0 subscriber to
// crashDataFilter. QoS 0 means it sends nothing to the gateway after
// subscribing, so the gateway's socket holds no unread data at kill time
// (unread data makes the kernel reset the connection and discard what the
// gateway had already written).
func (h *crashHarness) crashSubscribe(name string) *crashSubscriber {
	t := h.t
	t.Helper()
	s := &crashSubscriber{lost: make(chan struct{})}
	var lostOnce sync.Once
	handle := func(_ paho.Client, m paho.Message) {
		var body struct {
			PayloadID string `json:"payloadId"`
		}
		if err := json.Unmarshal(m.Payload(), &body); err != nil || body.PayloadID == "" {
			h.mu.Lock()
			h.badMsgs = append(h.badMsgs, m.Topic()+" "+string(m.Payload()))
			h.mu.Unlock()
			return
		}
		h.received.Add(body.PayloadID)
		s.got.Add(1)
	}
	s.client = testutil.Subscribe(t, "tcp://"+h.brokerAddr, crashDataFilter, 0, testutil.SubscriberOptions{
		ClientID:         fmt.Sprintf("crash-%s-%d-%d", name, os.Getpid(), h.subs.Add(1)),
		Handler:          handle,
		OnConnectionLost: func(error) { lostOnce.Do(func() { close(s.lost) }) },
	}).Client
	return s
}

// crashDrain waits for the subscriber to see its connection end after the
// gateway died: paho dispatches every message read before it reports the
// loss, so all that reached this process is counted. Then it disconnects.
func (s *crashSubscriber) crashDrain(t *testing.T) {
	t.Helper()
	select {
	case <-s.lost:
	case <-time.After(5 * time.Second):
		t.Logf("subscriber did not notice the gateway stop within 5 s")
	}
	s.client.Disconnect(0)
}

// crashLoad is a set of concurrent webhook posters.
type crashLoad struct {
	h      *crashHarness
	client *http.Client
	began  time.Time
	stop   atomic.Bool
	wg     sync.WaitGroup
	halt   sync.Once
	posted atomic.Int64
	acked  atomic.Int64  // 200 {"accepted":1,"duplicates":0} in this phase
	failed atomic.Int64  // transport errors and non-200 replies
	ran    time.Duration // from start to crashHalt
}

// crashStartLoad starts n posters, each on keep-alive connections, posting
// one new message (new payloadId, new device) per request.
func (h *crashHarness) crashStartLoad(n int) *crashLoad {
	l := &crashLoad{
		h:      h,
		began:  time.Now(),
		client: testutil.HTTPClient(h.t, n, 10*time.Second),
	}
	deadline := time.Now().Add(crashMaxLoad + crashExitTimeout)
	for i := 0; i < n; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for j := 0; j < crashMaxPostsEach && !l.stop.Load() && time.Now().Before(deadline); j++ {
				if !l.crashPostOne() {
					time.Sleep(5 * time.Millisecond) // gateway gone: don't spin
				}
			}
		}()
	}
	return l
}

// crashPostOne posts one message; it reports whether the request got a
// reply.
func (l *crashLoad) crashPostOne() bool {
	h := l.h
	n := h.seq.Add(1)
	payloadID := fmt.Sprintf("crash-%016x", n)
	body := fmt.Sprintf(`{"deviceId":"D%016X","projectId":"crash","payloadId":%q,"payloadType":"DATA","source":"p","timestamp":%q,"payload":{"temperature":21.75,"battery":{"percentage":75}}}`,
		n, payloadID, time.Now().UTC().Format("2006-01-02T15:04:05.000000+00:00"))
	req, err := http.NewRequest(http.MethodPost, h.webhookURL, strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Content-Type", "application/json")
	l.posted.Add(1)
	resp, err := l.client.Do(req)
	if err != nil {
		l.failed.Add(1)
		h.crashCountError(err)
		return false
	}
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch {
	case err != nil:
		// Not counted as accepted even if the status was 200: only a
		// complete {"accepted":1,...} reply counts.
		l.failed.Add(1)
		h.crashCountError(err)
		return false
	case resp.StatusCode != http.StatusOK:
		l.failed.Add(1)
		h.mu.Lock()
		h.statuses[resp.StatusCode]++
		h.mu.Unlock()
	case strings.TrimSpace(string(reply)) == crashAckedBody:
		h.acked.Add(payloadID)
		l.acked.Add(1)
	default:
		h.mu.Lock()
		h.odd200 = append(h.odd200, payloadID+": "+string(reply))
		h.mu.Unlock()
	}
	return true
}

func (h *crashHarness) crashCountError(err error) {
	class := testutil.ErrClass(err)
	h.mu.Lock()
	h.reqErrors[class]++
	if _, ok := h.errSample[class]; !ok {
		h.errSample[class] = err.Error()
	}
	h.mu.Unlock()
}

// crashHalt stops the posters and waits for them.
func (l *crashLoad) crashHalt() {
	l.halt.Do(func() {
		l.stop.Store(true)
		l.ran = time.Since(l.began)
		l.wg.Wait()
		l.client.CloseIdleConnections()
	})
}

func (l *crashLoad) crashSummary() string {
	return fmt.Sprintf("load %v: posted %d, 200 %d, failed %d", l.ran.Round(time.Millisecond), l.posted.Load(), l.acked.Load(), l.failed.Load())
}
