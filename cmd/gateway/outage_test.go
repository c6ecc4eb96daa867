//go:build unix

package main

// Outage tests (docs/contract.md#delivery): the gateway delivering to an external MQTT broker
// (`type: mqtt`, Debian's mosquitto) that goes away, comes back, or was
// never there, and the gateway itself killed with SIGKILL in front of it.
//
// Every check is made at a persistent subscriber of mosquitto (clean
// session off, fixed client id, QoS 1): mosquitto queues the gateway's
// publications for it while it is offline, and saves that queue on SIGTERM
// (persistence on, autosave_interval 0 = save at exit only), so whatever
// mosquitto acknowledged to the gateway reaches the subscriber even across
// a broker restart. Where the broker is down from the start, the session is
// prepared first: start mosquitto, connect and subscribe, disconnect, stop
// it with SIGTERM.
//
// The mqtt sink reconnects with backoff (1 s doubling up to 30 s, not
// configurable in YAML), so "broker back" → "sink connected" can take up to
// that long; the tests report it.
//
// Message bodies carry a unique payloadId and a "seq" field (per device, or
// the message's global index); the subscriber reads both back.
//
// Everything here is prefixed outage so it cannot clash with the other test
// files of package main.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
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
	outageProject     = "outage"
	outageFilter      = "wittra/+/+/data"
	outageOneAccepted = `{"accepted":1,"duplicates":0}`
	outageExitTimeout = exitTimeout
)

// outageNewMosq is a mosquitto on a free port, restartable, with
// persistence in its own temp dir; it is not started.
func outageNewMosq(t *testing.T) *testutil.Mosquitto {
	return testutil.NewMosquitto(t, testutil.MosquittoOptions{Persistence: true, NoDelay: true, MaxInflight: 1000})
}

// ---------------------------------------------------------------------------
// subscriber

// outageArrival is one message a subscriber received.
type outageArrival struct {
	id     string // payloadId
	device string // from the topic
	seq    int64  // the body's "seq"
}

// outageSub is a paho subscriber to outageFilter that records every
// arrival in order.
type outageSub struct {
	client paho.Client
	ids    testutil.IDSet // payloadIds, with how often each arrived

	mu        sync.Mutex
	arrivals  []outageArrival
	bad       int
	badSample string
}

// outageParse reads payloadId and seq from a body the tests posted.
func outageParse(topic string, payload []byte) (outageArrival, bool) {
	var a outageArrival
	parts := strings.Split(topic, "/")
	if len(parts) != 4 {
		return a, false
	}
	a.device = parts[2]
	const idKey, seqKey = `"payloadId":"`, `"seq":`
	i := bytes.Index(payload, []byte(idKey))
	if i < 0 {
		return a, false
	}
	rest := payload[i+len(idKey):]
	j := bytes.IndexByte(rest, '"')
	if j <= 0 {
		return a, false
	}
	a.id = string(rest[:j])
	k := bytes.Index(payload, []byte(seqKey))
	if k < 0 {
		return a, false
	}
	digits := payload[k+len(seqKey):]
	n := 0
	for n < len(digits) && digits[n] >= '0' && digits[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseInt(string(digits[:n]), 10, 64)
	if err != nil {
		return a, false
	}
	a.seq = seq
	return a, true
}

func (s *outageSub) handle(_ paho.Client, m paho.Message) {
	a, ok := outageParse(m.Topic(), m.Payload())
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		s.bad++
		if s.badSample == "" {
			s.badSample = m.Topic() + " " + string(m.Payload())
		}
		return
	}
	s.arrivals = append(s.arrivals, a)
	s.ids.Add(a.id)
}

// outageSubscribe connects a subscriber to url with client id id and
// subscribes it to outageFilter at QoS 1. persistent: clean session off,
// so the broker keeps its subscription and queues messages while it is
// offline. It reconnects by itself (every 500 ms at most).
func outageSubscribe(t *testing.T, url, id string, persistent bool) *outageSub {
	t.Helper()
	s := new(outageSub)
	s.client = testutil.Subscribe(t, url, outageFilter, 1, testutil.SubscriberOptions{
		ClientID: id, Persistent: persistent, Reconnect: true, Handler: s.handle}).Client
	return s
}

// outagePrepareSession leaves m stopped with a persistent session for
// client id subscribed to outageFilter: start, subscribe, disconnect,
// SIGTERM (which saves the session).
func outagePrepareSession(t *testing.T, m *testutil.Mosquitto, id string) {
	t.Helper()
	m.Start()
	s := outageSubscribe(t, m.URL(), id, true)
	s.client.Disconnect(100)
	if !m.Stop(syscall.SIGTERM) {
		t.Fatal("mosquitto needed SIGKILL; its persistence was not saved")
	}
}

// figures: distinct ids, all arrivals, ids received more than once,
// malformed messages.
func (s *outageSub) figures() (unique, total, repeated, bad int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids.Len(), len(s.arrivals), s.ids.Repeated(), s.bad
}

func (s *outageSub) unique() int { return s.ids.Len() }

// missing lists the ids of want that did not arrive.
func (s *outageSub) missing(want []string) []string { return s.ids.Missing(want) }

// seqs returns the distinct seq values that arrived, sorted.
func (s *outageSub) seqs() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[int64]bool)
	var out []int64
	for _, a := range s.arrivals {
		if !seen[a.seq] {
			seen[a.seq] = true
			out = append(out, a.seq)
		}
	}
	slices.Sort(out)
	return out
}

// orderViolations checks that, per device, the first arrivals of messages
// come in increasing seq (the order they were accepted in).
func (s *outageSub) orderViolations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]bool)
	last := make(map[string]int64)
	var bad []string
	for i, a := range s.arrivals {
		if seen[a.id] {
			continue
		}
		seen[a.id] = true
		if prev, ok := last[a.device]; ok && a.seq <= prev {
			bad = append(bad, fmt.Sprintf("arrival %d: %s seq %d after seq %d", i, a.device, a.seq, prev))
		}
		last[a.device] = a.seq
	}
	return bad
}

func (s *outageSub) badSummary() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bad, s.badSample
}

// ---------------------------------------------------------------------------
// webhook load

// outageBody is one DATA message of about 270 bytes.
func outageBody(device, id string, seq int64) string {
	return fmt.Sprintf(`{"deviceId":%q,"projectId":%q,"payloadId":%q,"payloadType":"DATA","source":"p","timestamp":"2024-03-12T08:15:42.517Z","seq":%d,"payload":{"temperature":21.75,"battery":{"percentage":75,"voltage":3.01},"humidity":{"humidity":41.2},"light":312}}`,
		device, outageProject, id, seq)
}

func outageDevice(i int) string { return fmt.Sprintf("D00124B001E2A%04X", i) }

func outageHTTPClient(t *testing.T, conns int) *http.Client {
	return testutil.HTTPClient(t, conns, 15*time.Second)
}

// ---------------------------------------------------------------------------
// metrics and waiting

// outageScrape reads /metrics; "" when it cannot.
func outageScrape(admin string) string {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(admin + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return ""
	}
	return string(b)
}

// outageWait polls cond until it holds, failing the test after d times
// outageSlack. It returns how long it took.
func outageWait(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	// d says when the condition is surely late on an idle machine; the
	// test waits outageSlack times that, since it asserts that it happens,
	// not how fast (the figures are logged).
	return testutil.WaitFor(t, d*outageSlack, what, cond)
}

// outageSlack multiplies the outage tests' waits: they bound hangs, not
// speed, and a loaded 2-core machine may be several times slower.
const outageSlack = 4

// outageMQTTSink is the YAML of an mqtt sink named plant to url.
func outageMQTTSink(url string) string {
	return fmt.Sprintf("{name: plant, type: mqtt, url: %s, qos: 1, topic_prefix: wittra, values: false, retain: false}", yamlString(url))
}

// ---------------------------------------------------------------------------
// in-process gateway

// outageGW is a gateway running in-process on loopback port 0 listeners.
type outageGW struct {
	*inProc
	webhook string // http://host:port/wittra
	admin   string // http://host:port
	broker  string // tcp://host:port of the embedded broker
}

// outageStartInProc runs the gateway with the given sinks list (YAML flow
// sequence items) and extra buffer keys (", key: value ..."), admin on.
func outageStartInProc(t *testing.T, sinksYAML, bufferExtra string) *outageGW {
	t.Helper()
	dir := t.TempDir()
	cfg := gatewayConfig("outage-gw", "127.0.0.1:0", "127.0.0.1:0", "path: "+yamlString(filepath.Join(dir, "queue.db"))+bufferExtra,
		"broker: {listeners: [{type: tcp, address: 127.0.0.1:0}]}\nsinks: ["+sinksYAML+"]\n")
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := &outageGW{inProc: runInProc(t, path, testTiming)}
	gw.webhook = "http://" + gw.g.webhookLn.Addr().String() + "/wittra"
	gw.admin = "http://" + gw.g.adminLn.Addr().String()
	if gw.g.brokerSrv != nil {
		gw.broker = "tcp://" + gw.g.brokerSrv.Addrs()[0]
	}
	return gw
}

// depth is the queue depth of sink name, and the stored messages.
func (gw *outageGW) depth(t *testing.T, name string) (depth, messages uint64) {
	t.Helper()
	st, err := gw.g.queue.Stats()
	if err != nil {
		t.Fatalf("queue stats: %v", err)
	}
	for _, c := range st.Consumers {
		if c.Name == name {
			return c.Depth, st.Messages
		}
	}
	t.Fatalf("queue stats: no consumer %s", name)
	return 0, 0
}

// ---------------------------------------------------------------------------
// gateway subprocess

// outageMem reads a process's memory figures (kB) from /proc/<pid>/status.
func outageMem(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make(map[string]int64)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasPrefix(k, "Vm") && !strings.HasPrefix(k, "Rss") {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 2 && fields[1] == "kB" {
			n, err := strconv.ParseInt(fields[0], 10, 64)
			if err == nil {
				out[k] = n
			}
		}
	}
	return out, sc.Err()
}

// ---------------------------------------------------------------------------
// 1. external broker restarted under load

// TestOutageExternalBrokerRestart posts steadily (4 devices, ~200 msg/s,
// one message per request, each device's requests one after another) for
// 8 s to a gateway with one mqtt sink; mosquitto is stopped with SIGTERM for
// 3 s in the middle and restarted on the same port. Every message that got
// a 200 must reach the persistent subscriber, and each device's messages
// must first arrive in the order they were accepted.
func TestOutageExternalBrokerRestart(t *testing.T) {
	t.Parallel()
	const (
		devices  = 4
		interval = 20 * time.Millisecond // per device: 50 msg/s, 200 msg/s in all
		loadFor  = 12 * time.Second      // the sink's reconnect backoff may take it to ~7 s after the loss
		downAt   = 2500 * time.Millisecond
		downFor  = 3 * time.Second
	)
	began := time.Now()
	m := outageNewMosq(t)
	m.Start()
	sub := outageSubscribe(t, m.URL(), "outage-restart-sub", true)
	gw := outageStartInProc(t, outageMQTTSink(m.URL()), "")
	outageWait(t, 15*time.Second, "mqtt sink connected", func() bool {
		return metricValue(outageScrape(gw.admin), `wittra_gateway_sink_connected{sink="plant"}`) == 1
	})

	client := outageHTTPClient(t, devices)
	var acked testutil.IDSet
	var fails testutil.IDSet
	var posted, lastEnd atomic.Int64
	var wg sync.WaitGroup
	loadStart := time.Now()
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				end := int64(time.Since(loadStart))
				for i := 0; i < 100; i++ {
					if old := lastEnd.Load(); end <= old || lastEnd.CompareAndSwap(old, end) {
						break
					}
				}
			}()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for seq := int64(1); seq <= int64(loadFor/interval)+1 && time.Since(loadStart) < loadFor; seq++ {
				id := fmt.Sprintf("restart-%d-%05d", d, seq)
				posted.Add(1)
				code, reply, _, err := testutil.Post(client, gw.webhook, outageBody(outageDevice(d), id, seq))
				switch {
				case err != nil:
					fails.Add(testutil.ErrClass(err))
				case code != 200:
					fails.Add(strconv.Itoa(code))
				case reply != outageOneAccepted:
					fails.Add("odd 200: " + reply)
				default:
					acked.Add(id)
				}
				<-tick.C
			}
		}()
	}

	time.Sleep(downAt)
	ackedBefore := len(acked.List())
	downStart := time.Now()
	if !m.Stop(syscall.SIGTERM) {
		t.Errorf("mosquitto needed SIGKILL after SIGTERM: its persistence was not saved")
	}
	stopTook := time.Since(downStart)
	time.Sleep(downFor - stopTook)
	ackedDown := len(acked.List()) - ackedBefore
	m.Start()
	downTook := time.Since(downStart)
	upAt := time.Now()
	reconnect := outageWait(t, 40*time.Second, "mqtt sink reconnected", func() bool {
		return metricValue(outageScrape(gw.admin), `wittra_gateway_sink_connected{sink="plant"}`) == 1
	})
	reconnectedAt := time.Since(loadStart)
	wg.Wait()
	loadTook := time.Duration(lastEnd.Load())

	ids := acked.List()
	waited := outageWait(t, 30*time.Second, "every accepted message at the subscriber", func() bool {
		return len(sub.missing(ids)) == 0
	})
	unique, total, repeated, bad := sub.figures()
	t.Logf("load %v: posted %d, 200 %d (%.0f msg/s), failed %d %v", loadTook.Round(time.Millisecond), posted.Load(), len(ids),
		float64(len(ids))/loadTook.Seconds(), fails.Total(), fails.String())
	t.Logf("mosquitto down %v (SIGTERM took %v), %d messages accepted meanwhile; mqtt sink connected again %v after mosquitto was back (%v into the load)",
		downTook.Round(time.Millisecond), stopTook.Round(time.Millisecond), ackedDown, reconnect.Round(time.Millisecond), reconnectedAt.Round(time.Millisecond))
	if ackedDown == 0 {
		t.Errorf("no message was accepted while mosquitto was down")
	}
	t.Logf("subscriber: %d unique, %d arrivals, %d ids more than once (%d extra arrivals); all in %v after the load ended (%v after mosquitto was back)",
		unique, total, repeated, total-unique, waited.Round(time.Millisecond), time.Since(upAt).Round(time.Millisecond))
	if fails.Total() > 0 {
		t.Errorf("%d requests failed while only the sink was down (intake must not depend on it): %v", fails.Total(), fails.String())
	}
	if len(ids) == 0 {
		t.Errorf("no message accepted in %v", loadTook)
	}
	// The rate depends on the machine: reported, not asserted.
	t.Logf("%d messages accepted in %v (paced for about %d)", len(ids), loadTook, int(loadFor/interval)*devices)
	if bad > 0 {
		n, sample := sub.badSummary()
		t.Errorf("%d messages on %s without payloadId/seq; first: %q", n, outageFilter, sample)
	}
	if v := sub.orderViolations(); len(v) > 0 {
		t.Errorf("%d per-device order violations among first arrivals; first: %v", len(v), v[:min(5, len(v))])
	}
	if unique != len(ids) {
		t.Logf("%d ids arrived that never got a 200 (accepted before a failed reply)", unique-len(ids))
	}
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}

// ---------------------------------------------------------------------------
// 2. kill -9 in front of an external broker

// TestOutageKill9WithExternalSink runs the gateway binary with one mqtt
// sink to mosquitto (which stays up) and kills it with SIGKILL three times
// under the load of 16 posters (one device each), restarting it on the same
// queue file each time. Finally every payloadId that got a 200 must have
// reached the persistent subscriber, first arrivals in per-device order.
func TestOutageKill9WithExternalSink(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test; skipped with -short")
	}
	const (
		cycles   = 3
		posters  = 16
		minLoad  = 1500 * time.Millisecond
		maxLoad  = 8 * time.Second
		minAcked = 300
	)
	began := time.Now()
	m := outageNewMosq(t)
	m.Start()
	sub := outageSubscribe(t, m.URL(), "outage-k9-sub", true)
	webhookAddr := testutil.FreeAddrs(t, 1)[0]
	g := newGatewayProc(t, "outage-k9", webhookAddr, "", "data/queue.db",
		"broker: {enabled: false}\nsinks: ["+outageMQTTSink(m.URL())+"]\n")
	url := "http://" + webhookAddr + "/wittra"

	var devSeq [posters]atomic.Int64
	var acked testutil.IDSet
	var fails testutil.IDSet
	for cycle := 1; cycle <= cycles; cycle++ {
		p := g.start(t, webhookAddr)
		client := outageHTTPClient(t, posters)
		var stop atomic.Bool
		var phaseAcked, phasePosted atomic.Int64
		var wg sync.WaitGroup
		deadline := time.Now().Add(maxLoad + outageExitTimeout)
		for d := range posters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 100000 && !stop.Load() && time.Now().Before(deadline); j++ {
					seq := devSeq[d].Add(1)
					id := fmt.Sprintf("k9-%02d-%06d", d, seq)
					phasePosted.Add(1)
					code, reply, _, err := testutil.Post(client, url, outageBody(outageDevice(d), id, seq))
					switch {
					case err != nil:
						fails.Add(testutil.ErrClass(err))
						time.Sleep(5 * time.Millisecond) // gateway gone: don't spin
					case code != 200:
						fails.Add(strconv.Itoa(code))
					case reply != outageOneAccepted:
						fails.Add("odd 200: " + reply)
					default:
						acked.Add(id)
						phaseAcked.Add(1)
					}
				}
			}()
		}
		loadStart := time.Now()
		want := minLoad + rand.N(300*time.Millisecond)
		for i := 0; ; i++ {
			if p.Exited() {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("cycle %d: gateway exited under load: %v", cycle, p.Err)
			}
			el := time.Since(loadStart)
			if (el >= want && phaseAcked.Load() >= minAcked) || el >= maxLoad || i > 10000 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		p.Kill9(t)
		stop.Store(true)
		wg.Wait()
		client.CloseIdleConnections()
		p.WaitKilled(t, outageExitTimeout)
		if phaseAcked.Load() == 0 {
			t.Fatalf("cycle %d: no request got a 200; failures %v", cycle, fails.String())
		}
		t.Logf("cycle %d: load %v, posted %d, 200 %d; subscriber so far %d unique", cycle,
			time.Since(loadStart).Round(time.Millisecond), phasePosted.Load(), phaseAcked.Load(), sub.unique())
	}

	p := g.start(t, webhookAddr)
	ids := acked.List()
	var missing []string
	waitStart := time.Now()
	for i := 0; i < 3000 && time.Since(waitStart) < 30*time.Second && !p.Exited(); i++ {
		if missing = sub.missing(ids); len(missing) == 0 {
			break
		}
		time.Sleep(testutil.PollEvery)
	}
	unique, total, repeated, bad := sub.figures()
	t.Logf("acked %d; subscriber: %d unique, %d arrivals, %d ids more than once (%d extra arrivals), %d never acked; last missing ones arrived %v after the final start",
		len(ids), unique, total, repeated, total-unique, unique-(len(ids)-len(missing)), time.Since(waitStart).Round(time.Millisecond))
	t.Logf("failed requests by class (kills make these): %v", fails.String())
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Fatalf("%d of %d acknowledged messages (HTTP 200) never reached the subscriber; first: %v", len(missing), len(ids), missing[:min(20, len(missing))])
	}
	if p.Exited() {
		t.Fatalf("gateway exited: %v", p.Err)
	}
	if bad > 0 {
		n, sample := sub.badSummary()
		t.Errorf("%d messages without payloadId/seq; first: %q", n, sample)
	}
	if v := sub.orderViolations(); len(v) > 0 {
		t.Errorf("%d per-device order violations among first arrivals; first: %v", len(v), v[:min(5, len(v))])
	}
	took := p.StopClean(t, exitTimeout)
	t.Logf("SIGTERM: exited 0 after %v; total %v", took.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}

// ---------------------------------------------------------------------------
// 3. one sink down, the other on time

// TestOutageOneSinkDownOthersOnTime runs two sinks, the embedded broker
// (local) and an mqtt sink (plant) whose mosquitto is down: 2,000 messages
// reach the embedded broker's subscriber at once, the queue keeps them for
// plant only, and they all reach plant's subscriber once mosquitto is back.
func TestOutageOneSinkDownOthersOnTime(t *testing.T) {
	t.Parallel()
	const (
		n       = 2000
		perReq  = 100
		devices = 4
	)
	began := time.Now()
	m := outageNewMosq(t)
	outagePrepareSession(t, m, "outage-onedown-sub")
	gw := outageStartInProc(t, "{name: local, type: broker, topic_prefix: wittra, values: false}, "+outageMQTTSink(m.URL()), "")
	local := outageSubscribe(t, gw.broker, "outage-onedown-local", false)

	client := outageHTTPClient(t, 1)
	postStart := time.Now()
	for r := 0; r < n/perReq; r++ {
		var batch []string
		for i := r * perReq; i < (r+1)*perReq; i++ {
			id := fmt.Sprintf("onedown-%05d", i)
			batch = append(batch, outageBody(outageDevice(i%devices), id, int64(i)))
		}
		code, reply, _, err := testutil.Post(client, gw.webhook, "["+strings.Join(batch, ",")+"]")
		if err != nil || code != 200 || reply != fmt.Sprintf(`{"accepted":%d,"duplicates":0}`, perReq) {
			t.Fatalf("post %d: %d %q %v", r, code, reply, err)
		}
	}
	posted := time.Since(postStart)
	localTook := outageWait(t, 5*time.Second, "every message at the embedded broker's subscriber (plant is down)", func() bool {
		return local.unique() == n
	})
	t.Logf("posted %d in %v; all at the embedded broker %v after the last 200 (%v after the first post)",
		n, posted.Round(time.Millisecond), localTook.Round(time.Millisecond), time.Since(postStart).Round(time.Millisecond))
	if v := local.orderViolations(); len(v) > 0 {
		t.Errorf("local: %d order violations; first: %v", len(v), v[:min(5, len(v))])
	}

	var text string
	outageWait(t, 5*time.Second, "local depth 0 in /metrics", func() bool {
		text = outageScrape(gw.admin)
		return metricValue(text, `wittra_gateway_queue_depth_messages{sink="local"}`) == 0
	})
	for name, want := range map[string]float64{
		`wittra_gateway_queue_depth_messages{sink="plant"}`:  n,
		`wittra_gateway_queue_depth_messages{sink="local"}`:  0,
		`wittra_gateway_queue_messages`:                      n,
		`wittra_gateway_sink_connected{sink="plant"}`:        0,
		`wittra_gateway_sink_deliveries_total{sink="local"}`: n,
		`wittra_gateway_sink_deliveries_total{sink="plant"}`: 0,
	} {
		if got := metricValue(text, name); got != want {
			t.Errorf("while plant is down: %s = %v, want %v", name, got, want)
		}
	}
	t.Logf("while plant is down: plant oldest age %.1f s, queue_bytes %.0f",
		metricValue(text, `wittra_gateway_queue_oldest_age_seconds{sink="plant"}`), metricValue(text, `wittra_gateway_queue_bytes`))

	m.Start()
	plant := outageSubscribe(t, m.URL(), "outage-onedown-sub", true)
	plantTook := outageWait(t, 45*time.Second, "every message at plant's subscriber after mosquitto came back", func() bool {
		return plant.unique() == n
	})
	drained := outageWait(t, 10*time.Second, "plant depth 0 and queue_messages 0", func() bool {
		text = outageScrape(gw.admin)
		return metricValue(text, `wittra_gateway_queue_depth_messages{sink="plant"}`) == 0 &&
			metricValue(text, `wittra_gateway_queue_messages`) == 0
	})
	unique, total, repeated, _ := plant.figures()
	t.Logf("plant: all %d at the subscriber %v after mosquitto was back (%d arrivals, %d ids more than once); depth and queue at 0 %v later",
		unique, plantTook.Round(time.Millisecond), total, repeated, drained.Round(time.Millisecond))
	if v := plant.orderViolations(); len(v) > 0 {
		t.Errorf("plant: %d order violations; first: %v", len(v), v[:min(5, len(v))])
	}
	if got := metricValue(text, `wittra_gateway_sink_deliveries_total{sink="plant"}`); got < n {
		t.Errorf("sink_deliveries_total{plant} = %v, want ≥ %d", got, n)
	}
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}

// ---------------------------------------------------------------------------
// 4. a long backlog in bounded memory

// TestOutageLongBacklogBoundedMemory queues 100,000 messages in the gateway
// binary while its only sink's mosquitto is down, samples the process's
// memory, then starts mosquitto and measures the drain.
func TestOutageLongBacklogBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("long backlog test; skipped with -short")
	}
	const (
		total   = 100000
		perReq  = 100
		posters = 8
		// kB. VmRSS includes the pages of the mmap'd queue file the
		// forwarder has read (RssFile); the product target of 40 MB is
		// reported, not asserted.
		rssBound  = 150 << 10
		anonBound = 80 << 10
	)
	began := time.Now()
	m := outageNewMosq(t)
	outagePrepareSession(t, m, "outage-backlog-sub")
	addrs := testutil.FreeAddrs(t, 2)
	webhookAddr, adminAddr := addrs[0], addrs[1]
	g := newGatewayProc(t, "outage-backlog", webhookAddr, adminAddr, "data/queue.db",
		"broker: {enabled: false}\nsinks: ["+outageMQTTSink(m.URL())+"]\n")
	p := g.start(t, webhookAddr, adminAddr)
	admin := "http://" + adminAddr
	pid := p.Cmd.Process.Pid
	startMem, err := outageMem(pid)
	if err != nil {
		t.Fatalf("read /proc/%d/status: %v", pid, err)
	}

	// Memory sampler: the figures at the highest VmRSS of each phase.
	var phase atomic.Int32 // 0 intake, 1 idle backlog, 2 drain
	var peakMu sync.Mutex
	var peaks [3]map[string]int64
	var samples atomic.Int64
	samplerStop := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 100000; i++ {
			select {
			case <-samplerStop:
				return
			case <-tick.C:
			}
			mem, err := outageMem(pid)
			if err != nil {
				continue
			}
			samples.Add(1)
			peakMu.Lock()
			if pk := &peaks[phase.Load()]; mem["VmRSS"] > (*pk)["VmRSS"] {
				*pk = mem
			}
			peakMu.Unlock()
		}
	}()
	stopSampler := sync.OnceFunc(func() {
		close(samplerStop)
		<-samplerDone
	})
	t.Cleanup(stopSampler)

	// Intake: total messages, perReq per request, posters at once.
	url := "http://" + webhookAddr + "/wittra"
	client := outageHTTPClient(t, posters)
	var next atomic.Int64
	var fails testutil.IDSet
	var wg sync.WaitGroup
	intakeStart := time.Now()
	for range posters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b strings.Builder
			for {
				r := next.Add(1) - 1
				if r >= total/perReq || time.Since(intakeStart) > outageSlack*60*time.Second {
					return
				}
				b.Reset()
				b.WriteByte('[')
				for i := r * perReq; i < (r+1)*perReq; i++ {
					if i > r*perReq {
						b.WriteByte(',')
					}
					b.WriteString(outageBody(outageDevice(int(i%16)), fmt.Sprintf("backlog-%06d", i), i))
				}
				b.WriteByte(']')
				code, reply, _, err := testutil.Post(client, url, b.String())
				switch {
				case err != nil:
					fails.Add(testutil.ErrClass(err))
				case code != 200:
					fails.Add(strconv.Itoa(code))
				case reply != fmt.Sprintf(`{"accepted":%d,"duplicates":0}`, perReq):
					fails.Add("odd 200: " + reply)
				}
			}
		}()
	}
	wg.Wait()
	intake := time.Since(intakeStart)
	if fails.Total() > 0 {
		t.Fatalf("intake: %d requests failed: %v", fails.Total(), fails.String())
	}
	phase.Store(1)
	var text string
	outageWait(t, 5*time.Second, "plant depth = 100,000 in /metrics", func() bool {
		text = outageScrape(admin)
		return metricValue(text, `wittra_gateway_queue_depth_messages{sink="plant"}`) == total
	})
	fileBytes := metricValue(text, `wittra_gateway_queue_file_bytes`)
	queueBytes := metricValue(text, `wittra_gateway_queue_bytes`)
	time.Sleep(500 * time.Millisecond) // settle, one more sample in the idle phase
	backlogMem, _ := outageMem(pid)

	// Drain: mosquitto back; sink connects after its backoff.
	phase.Store(2)
	m.Start()
	upAt := time.Now()
	sub := outageSubscribe(t, m.URL(), "outage-backlog-sub", true)
	var connectedAt, drainedAt time.Time
	for time.Since(upAt) < outageSlack*60*time.Second {
		text = outageScrape(admin)
		now := time.Now()
		if connectedAt.IsZero() && metricValue(text, `wittra_gateway_sink_connected{sink="plant"}`) == 1 {
			connectedAt = now
		}
		if metricValue(text, `wittra_gateway_queue_depth_messages{sink="plant"}`) == 0 {
			drainedAt = now
			if connectedAt.IsZero() {
				connectedAt = now
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if drainedAt.IsZero() {
		t.Fatalf("backlog not drained within %d×60 s of mosquitto's start (connected: %v); metrics depth %v", outageSlack,
			!connectedAt.IsZero(), metricValue(text, `wittra_gateway_queue_depth_messages{sink="plant"}`))
	}
	subTook := outageWait(t, 30*time.Second, "all 100,000 at the subscriber", func() bool { return sub.unique() == total })
	stopSampler()
	endMem, _ := outageMem(pid)
	unique, arrivals, repeated, bad := sub.figures()

	drain := drainedAt.Sub(connectedAt)
	t.Logf("intake: %d messages in %d requests of %d, %d posters: %v, %.0f msg/s; queue_bytes %.1f MiB, file %.1f MiB",
		total, total/perReq, perReq, posters, intake.Round(time.Millisecond), total/intake.Seconds(), queueBytes/(1<<20), fileBytes/(1<<20))
	peakMu.Lock()
	memLine := func(m map[string]int64) string {
		return fmt.Sprintf("VmRSS %.1f (RssAnon %.1f + RssFile %.1f)", outageMiB(m["VmRSS"]), outageMiB(m["RssAnon"]), outageMiB(m["RssFile"]))
	}
	t.Logf("memory (MiB, %d samples): at start %s", samples.Load(), memLine(startMem))
	t.Logf("memory (MiB): peak during intake %s; idle with the backlog %s", memLine(peaks[0]), memLine(backlogMem))
	t.Logf("memory (MiB): peak during drain %s; at end %s, VmHWM %.1f", memLine(peaks[2]), memLine(endMem), outageMiB(endMem["VmHWM"]))
	peak := max(peaks[0]["VmRSS"], peaks[1]["VmRSS"], peaks[2]["VmRSS"], endMem["VmHWM"])
	peakAnon := max(peaks[0]["RssAnon"], peaks[1]["RssAnon"], peaks[2]["RssAnon"], endMem["RssAnon"])
	peakMu.Unlock()
	t.Logf("drain: sink connected %v after mosquitto started (reconnect backoff); depth 0 %v later: %.0f msg/s to mosquitto; subscriber had all %v after depth 0 (%d arrivals, %d ids more than once)",
		connectedAt.Sub(upAt).Round(time.Millisecond), drain.Round(time.Millisecond), total/max(drain.Seconds(), 0.05),
		subTook.Round(time.Millisecond), arrivals, repeated)
	if unique != total {
		t.Errorf("subscriber got %d distinct messages, want %d", unique, total)
	}
	if bad > 0 {
		n, sample := sub.badSummary()
		t.Errorf("%d messages without payloadId/seq; first: %q", n, sample)
	}
	if peak > rssBound {
		t.Errorf("gateway RSS peaked at %.1f MiB with a 100,000-message backlog, want < %.0f MiB", outageMiB(peak), outageMiB(rssBound))
	}
	if peakAnon > anonBound {
		t.Errorf("gateway anonymous memory (heap, stacks) peaked at %.1f MiB with a 100,000-message backlog, want < %.0f MiB", outageMiB(peakAnon), outageMiB(anonBound))
	}
	took := p.StopClean(t, exitTimeout)
	t.Logf("SIGTERM: exited 0 after %v; total %v", took.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}

// outageMiB converts kB to MiB.
func outageMiB(v int64) float64 { return float64(v) / 1024 }

// ---------------------------------------------------------------------------
// 5. when_full

// TestOutageWhenFullPolicies fills a 64 KiB queue while the only sink's
// mosquitto is down, under both policies.
func TestOutageWhenFullPolicies(t *testing.T) {
	t.Parallel()
	const perReq = 10
	batch := func(from int) (string, []string) {
		var parts, ids []string
		for i := from; i < from+perReq; i++ {
			id := fmt.Sprintf("full-%05d", i)
			ids = append(ids, id)
			parts = append(parts, outageBody(outageDevice(i%4), id, int64(i)))
		}
		return "[" + strings.Join(parts, ",") + "]", ids
	}
	okReply := fmt.Sprintf(`{"accepted":%d,"duplicates":0}`, perReq)

	t.Run("reject", func(t *testing.T) {
		m := outageNewMosq(t)
		outagePrepareSession(t, m, "outage-reject-sub")
		gw := outageStartInProc(t, outageMQTTSink(m.URL()), ", max_bytes: 64KiB, when_full: reject")
		client := outageHTTPClient(t, 1)
		var acked []string
		next := 0
		var code int
		var reply string
		var hdr http.Header
		for r := 0; r < 1000; r++ {
			body, ids := batch(next)
			var err error
			code, reply, hdr, err = testutil.Post(client, gw.webhook, body)
			if err != nil {
				t.Fatal(err)
			}
			if code != 200 {
				break
			}
			if reply != okReply {
				t.Fatalf("request %d: 200 %q", r, reply)
			}
			acked = append(acked, ids...)
			next += perReq
		}
		if code != http.StatusServiceUnavailable {
			t.Fatalf("no 503 after %d messages in a 64 KiB queue; last reply %d %q", len(acked), code, reply)
		}
		if hdr.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After (body %q)", reply)
		}
		st, err := gw.g.queue.Stats()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("full after %d messages (%d bytes stored): 503 %q, Retry-After %q", len(acked), st.Bytes, reply, hdr.Get("Retry-After"))
		if st.Messages != uint64(len(acked)) || st.Bytes > 64<<10 {
			t.Errorf("after the 503: queue holds %d messages, %d bytes; want exactly the %d accepted ones within 64 KiB", st.Messages, st.Bytes, len(acked))
		}
		// Refused again: all or nothing.
		body, _ := batch(next)
		if code, reply, _, _ := testutil.Post(client, gw.webhook, body); code != 503 {
			t.Errorf("second post into a full queue: %d %q, want 503", code, reply)
		}
		st2, _ := gw.g.queue.Stats()
		if st2.Messages != st.Messages || st2.Bytes != st.Bytes || st2.Last != st.Last {
			t.Errorf("a refused request changed the queue: %d msgs/%d bytes/last %d → %d/%d/%d", st.Messages, st.Bytes, st.Last, st2.Messages, st2.Bytes, st2.Last)
		}
		text := outageScrape(gw.admin)
		if got := metricValue(text, `wittra_gateway_webhook_requests_total{code="503",route="/wittra"}`); got != 2 {
			t.Errorf(`webhook_requests_total{code="503"} = %v, want 2`, got)
		}
		if got := metricValue(text, `wittra_gateway_messages_dropped_total{reason="queue_full"}`); got != 0 {
			t.Errorf(`messages_dropped_total{reason="queue_full"} = %v under reject, want 0`, got)
		}
		// Nothing was dropped, but the refusals must show where operators alert.
		if got := metricValue(text, `wittra_gateway_messages_refused_total{reason="queue_full",route="/wittra"}`); got != float64(2*perReq) {
			t.Errorf(`messages_refused_total{reason="queue_full"} = %v, want the 2 refused requests' %d messages`, got, 2*perReq)
		}

		m.Start()
		sub := outageSubscribe(t, m.URL(), "outage-reject-sub", true)
		drained := outageWait(t, 45*time.Second, "queue drained after mosquitto came back", func() bool {
			d, n := gw.depth(t, "plant")
			return d == 0 && n == 0
		})
		body, ids := batch(next)
		if code, reply, _, err := testutil.Post(client, gw.webhook, body); err != nil || code != 200 || reply != okReply {
			t.Fatalf("post after the drain: %d %q %v, want 200", code, reply, err)
		}
		acked = append(acked, ids...)
		outageWait(t, 15*time.Second, "every accepted message at the subscriber", func() bool { return len(sub.missing(acked)) == 0 })
		unique, total, repeated, _ := sub.figures()
		t.Logf("drained %v after mosquitto was back; posting works again; subscriber %d unique, %d arrivals, %d ids more than once",
			drained.Round(time.Millisecond), unique, total, repeated)
	})

	t.Run("drop_oldest", func(t *testing.T) {
		const n = 1000
		m := outageNewMosq(t)
		outagePrepareSession(t, m, "outage-drop-sub")
		gw := outageStartInProc(t, outageMQTTSink(m.URL()), ", max_bytes: 64KiB, when_full: drop_oldest")
		client := outageHTTPClient(t, 1)
		var all []string
		for from := 0; from < n; from += perReq {
			body, ids := batch(from)
			code, reply, _, err := testutil.Post(client, gw.webhook, body)
			if err != nil || code != 200 || reply != okReply {
				t.Fatalf("post of messages %d..: %d %q %v, want 200 (drop_oldest never refuses)", from, code, reply, err)
			}
			all = append(all, ids...)
		}
		st, err := gw.g.queue.Stats()
		if err != nil {
			t.Fatal(err)
		}
		text := outageScrape(gw.admin)
		dropped := metricValue(text, `wittra_gateway_messages_dropped_total{reason="queue_full"}`)
		t.Logf("after %d messages: queue holds %d (seq %d..%d, %d bytes), dropped %v", n, st.Messages, st.Head, st.Last, st.Bytes, dropped)
		if dropped <= 0 || uint64(dropped) != st.Dropped {
			t.Errorf(`messages_dropped_total{reason="queue_full"} = %v, queue counter %d; want equal and > 0`, dropped, st.Dropped)
		}
		if st.Last != n || st.Messages == 0 || st.Messages >= n || st.Bytes > 64<<10 || st.Messages+st.Dropped != n {
			t.Fatalf("queue after drop_oldest: %+v; want the newest messages only, within 64 KiB, kept + dropped = %d", st, n)
		}
		// Fresh queue, no duplicates: message i has sequence i+1.
		firstKept := int(st.Head) - 1

		m.Start()
		sub := outageSubscribe(t, m.URL(), "outage-drop-sub", true)
		kept := all[firstKept:]
		outageWait(t, 45*time.Second, "the kept messages at the subscriber", func() bool { return len(sub.missing(kept)) == 0 })
		outageWait(t, 10*time.Second, "depth 0", func() bool {
			d, q := gw.depth(t, "plant")
			return d == 0 && q == 0
		})
		// Which of the dropped ones arrived anyway?
		var stale []int64
		for _, s := range sub.seqs() {
			if s < int64(firstKept) {
				stale = append(stale, s)
			}
		}
		prefix := len(stale) == 0 || (stale[0] == 0 && stale[len(stale)-1] == int64(len(stale)-1))
		t.Logf("subscriber: all %d kept (newest) messages arrived; of the %d dropped, %d arrived anyway (seq %v): the batch the forwarder had read before the drops",
			len(kept), firstKept, len(stale), outageRange(stale))
		if len(stale) > 0 {
			t.Errorf("dropped messages arrived: %v (prefix %v); want none: the forwarder must skip what the queue deleted", outageRange(stale), prefix)
		}
		if v := sub.orderViolations(); len(v) > 0 {
			t.Errorf("%d order violations; first: %v", len(v), v[:min(5, len(v))])
		}
	})
}

// outageRange prints a sorted list of seqs compactly.
func outageRange(s []int64) string {
	switch len(s) {
	case 0:
		return "none"
	case 1:
		return fmt.Sprint(s[0])
	}
	return fmt.Sprintf("%d..%d (%d)", s[0], s[len(s)-1], len(s))
}

// ---------------------------------------------------------------------------
// 6. max_age

// TestOutageMaxAgeExpiry queues messages with max_age 1s while the only
// sink's mosquitto is down, lets them age, and expires them. The queue
// sweeps every 30 s (buffer.DefaultSweepInterval) and no configuration key
// changes that, so the test runs the sweep itself on the running gateway's
// queue (what the 30 s ticker calls); everything else is the real gateway.
func TestOutageMaxAgeExpiry(t *testing.T) {
	t.Parallel()
	const (
		old    = 50
		fresh  = 20
		perReq = 10
	)
	m := outageNewMosq(t)
	outagePrepareSession(t, m, "outage-expiry-sub")
	gw := outageStartInProc(t, outageMQTTSink(m.URL()), ", max_age: 1s")
	client := outageHTTPClient(t, 1)
	post := func(from, count int) []string {
		var ids []string
		for r := from; r < from+count; r += perReq {
			var parts []string
			for i := r; i < r+perReq; i++ {
				id := fmt.Sprintf("expiry-%05d", i)
				ids = append(ids, id)
				parts = append(parts, outageBody(outageDevice(i%2), id, int64(i)))
			}
			code, reply, _, err := testutil.Post(client, gw.webhook, "["+strings.Join(parts, ",")+"]")
			if err != nil || code != 200 || reply != fmt.Sprintf(`{"accepted":%d,"duplicates":0}`, perReq) {
				t.Fatalf("post: %d %q %v", code, reply, err)
			}
		}
		return ids
	}
	post(0, old)
	time.Sleep(1200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.g.queue.Sweep(ctx); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	text := outageScrape(gw.admin)
	for name, want := range map[string]float64{
		`wittra_gateway_messages_expired_total`:             old,
		`wittra_gateway_queue_depth_messages{sink="plant"}`: 0,
		`wittra_gateway_queue_messages`:                     0,
		`wittra_gateway_queue_bytes`:                        0,
	} {
		if got := metricValue(text, name); got != want {
			t.Errorf("after the sweep: %s = %v, want %v", name, got, want)
		}
	}
	freshIDs := post(old, fresh)
	m.Start()
	sub := outageSubscribe(t, m.URL(), "outage-expiry-sub", true)
	took := outageWait(t, 45*time.Second, "the fresh messages at the subscriber", func() bool { return len(sub.missing(freshIDs)) == 0 })
	outageWait(t, 10*time.Second, "depth 0", func() bool {
		d, q := gw.depth(t, "plant")
		return d == 0 && q == 0
	})
	var stale []int64
	for _, s := range sub.seqs() {
		if s < old {
			stale = append(stale, s)
		}
	}
	t.Logf("fresh messages delivered %v after mosquitto was back; of %d expired messages %d were delivered anyway (seq %s): the batch the forwarder had read before they expired",
		took.Round(time.Millisecond), old, len(stale), outageRange(stale))
	if len(stale) > 0 {
		t.Errorf("expired messages delivered: %s; want none: the forwarder must skip what the queue deleted", outageRange(stale))
	}
}
