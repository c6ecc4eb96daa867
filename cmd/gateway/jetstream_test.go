package main

// The gateway binary with a `type: jetstream` sink against a real 3-node
// NATS cluster run in-process (internal/natstest): kill -9 of the gateway
// under load, and the stream's leader node shut down under load. The
// stream must then hold every payloadId that got a 200 exactly once (the
// Nats-Msg-Id de-duplication drops what a restarted gateway publishes
// again), and each device's messages in the order they were accepted.
//
// Each poster owns its devices and posts sequentially, so the order in
// which its messages were accepted is the order it posted them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"wittra-gateway/internal/natstest"
	"wittra-gateway/internal/testutil"
)

const (
	jsPosters        = 8
	jsDevicesEach    = 4
	jsPhase          = 1500 * time.Millisecond
	jsDeliverTimeout = 60 * time.Second
	jsStream         = "WITTRA"
)

type jsHarness struct {
	t *testing.T
	*gatewayProc
	webhookAddr string
	cluster     *natstest.Cluster

	mu    sync.Mutex
	acked map[string]bool // payloadIds that got 200 {"accepted":1,...}
	seq   [jsPosters]int  // per poster, the next message number
}

func jsNewHarness(t *testing.T) *jsHarness {
	t.Helper()
	c, err := natstest.Start(natstest.Options{Nodes: 3, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	h := &jsHarness{t: t, webhookAddr: testutil.FreeAddrs(t, 1)[0], cluster: c, acked: map[string]bool{}}
	var urls []string
	for _, u := range c.ClientURLs() {
		urls = append(urls, yamlString(u))
	}
	h.gatewayProc = newGatewayProc(t, "js-gw", h.webhookAddr, "", "queue.db", fmt.Sprintf(`broker: {enabled: false}
sinks:
  - name: central
    type: jetstream
    urls: [%s]
    stream: {name: %s}
`, strings.Join(urls, ", "), jsStream))
	return h
}

func (h *jsHarness) start() *testutil.Process {
	return h.gatewayProc.start(h.t, h.webhookAddr)
}

// load posts from jsPosters sequential posters until stop is closed.
func (h *jsHarness) load(stop <-chan struct{}) (wait func() int) {
	var wg sync.WaitGroup
	var ok atomic.Int64
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: jsPosters}}
	for p := range jsPosters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				h.mu.Lock()
				n := h.seq[p]
				h.seq[p]++
				h.mu.Unlock()
				id := fmt.Sprintf("js-%d-%06d", p, n)
				body := fmt.Sprintf(`{"deviceId":"D%d.%d","projectId":"js","payloadId":%q,"payloadType":"DATA","n":%d,"payload":{"temperature":21.5}}`,
					p, n%jsDevicesEach, id, n)
				resp, err := client.Post("http://"+h.webhookAddr+"/wittra", "application/json", strings.NewReader(body))
				if err != nil {
					time.Sleep(10 * time.Millisecond) // gateway gone
					continue
				}
				reply, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == 200 && strings.TrimSpace(string(reply)) == `{"accepted":1,"duplicates":0}` {
					h.mu.Lock()
					h.acked[id] = true
					h.mu.Unlock()
					ok.Add(1)
				}
			}
		}()
	}
	return func() int {
		wg.Wait()
		client.CloseIdleConnections()
		return int(ok.Load())
	}
}

// phase runs load for d and returns how many got a 200.
func (h *jsHarness) phase(d time.Duration, during func()) int {
	stop := make(chan struct{})
	wait := h.load(stop)
	time.Sleep(d / 2)
	if during != nil {
		during()
	}
	time.Sleep(d / 2)
	close(stop)
	return wait()
}

func (h *jsHarness) kill9(g *testutil.Process) {
	t := h.t
	g.Kill9(t)
	g.WaitKilled(t, 10*time.Second)
}

// jsStored is what the check needs of one stream message.
type jsStored struct {
	PayloadID string `json:"payloadId"`
	DeviceID  string `json:"deviceId"`
	N         int    `json:"n"`
}

// readAll reads the whole stream in order through the running nodes.
func readAll(t *testing.T, c *natstest.Cluster, stream string) ([]jsStored, error) {
	var urls []string
	for i := range c.Nodes() {
		if c.Running(i) {
			urls = append(urls, c.ClientURL(i))
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	total := st.CachedInfo().State.Msgs
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	var out []jsStored
	for uint64(len(out)) < total {
		batch, err := cons.Fetch(int(min(500, total-uint64(len(out)))), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var s jsStored
			if err := json.Unmarshal(m.Data(), &s); err != nil {
				t.Errorf("stream message on %s is not the body: %v", m.Subject(), err)
			}
			if id := m.Headers().Get(jetstream.MsgIDHeader); id != s.PayloadID {
				t.Errorf("Nats-Msg-Id %q for payloadId %q", id, s.PayloadID)
			}
			out = append(out, s)
		}
		if e := batch.Error(); e != nil && !errors.Is(e, nats.ErrTimeout) {
			return nil, e
		}
		if got == 0 && ctx.Err() != nil {
			return nil, fmt.Errorf("read %d of %d", len(out), total)
		}
	}
	return out, nil
}

// verify waits until the stream holds every acknowledged payloadId, then
// checks exactly once and per-device order.
func (h *jsHarness) verify() {
	t := h.t
	h.mu.Lock()
	acked := make(map[string]bool, len(h.acked))
	for id := range h.acked {
		acked[id] = true
	}
	h.mu.Unlock()
	deadline := time.Now().Add(jsDeliverTimeout)
	var got []jsStored
	var missing []string
	for {
		var err error
		got, err = readAll(t, h.cluster, jsStream)
		missing = missing[:0]
		if err == nil {
			seen := map[string]bool{}
			for _, s := range got {
				seen[s.PayloadID] = true
			}
			for id := range acked {
				if !seen[id] {
					missing = append(missing, id)
				}
			}
		}
		if err == nil && len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			sort.Strings(missing)
			t.Fatalf("after %v: %d of %d acknowledged payloadIds not in the stream (err %v); first: %v",
				jsDeliverTimeout, len(missing), len(acked), err, missing[:min(10, len(missing))])
		}
		time.Sleep(500 * time.Millisecond)
	}
	count := map[string]int{}
	last := map[string]int{}
	dups, inversions := 0, 0
	for _, s := range got {
		count[s.PayloadID]++
		if count[s.PayloadID] == 2 {
			dups++
		}
		if prev, ok := last[s.DeviceID]; ok && s.N < prev {
			inversions++
			if inversions <= 5 {
				t.Errorf("device %s: message %d stored after %d", s.DeviceID, s.N, prev)
			}
		}
		last[s.DeviceID] = s.N
	}
	t.Logf("stream: %d messages, %d acknowledged (200), %d stored but never acknowledged (reply lost to a kill), %d stored twice, %d order inversions",
		len(got), len(acked), len(count)-len(acked), dups, inversions)
	if dups > 0 || inversions > 0 {
		t.Fatalf("%d payloadIds stored more than once, %d per-device order inversions", dups, inversions)
	}
}

// TestJetStreamClusterKill9AndNodeLoss: gateway kill -9 under load twice,
// the stream leader shut down under load, then everything acknowledged is
// in the R=3 stream exactly once, in order per device.
func TestJetStreamClusterKill9AndNodeLoss(t *testing.T) {
	began := time.Now()
	h := jsNewHarness(t)
	t.Logf("cluster up in %v", time.Since(began).Round(time.Millisecond))

	g := h.start()
	n := h.phase(jsPhase, nil)
	h.kill9(g)
	t.Logf("phase 1: %d acknowledged, then kill -9", n)

	g = h.start()
	leader := -1
	n = h.phase(2*jsPhase, func() {
		if leader = h.cluster.StreamLeader(jsStream); leader >= 0 {
			h.cluster.Shutdown(leader)
		}
	})
	if leader < 0 {
		t.Fatal("no stream leader to shut down (the stream was not created?)")
	}
	t.Logf("phase 2: %d acknowledged; stream leader n%d shut down mid-phase", n, leader)
	h.kill9(g)
	t.Logf("kill -9 with a node down")

	g = h.start()
	n = h.phase(jsPhase, func() {
		if err := h.cluster.Restart(leader); err != nil {
			t.Error(err)
		}
	})
	t.Logf("phase 3: %d acknowledged; n%d back mid-phase", n, leader)
	h.verify()
	if err := g.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !g.WaitExit(10*time.Second) || g.Cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("SIGTERM: exited %v (%v)", g.Exited(), g.Err)
	}
	log, _ := os.ReadFile(h.logPath)
	if !strings.Contains(string(log), `"replicas":3`) {
		t.Errorf("the gateway did not create the stream with 3 replicas:\n%s", testutil.FileTail(h.logPath, 8<<10))
	}
	// Not asserted: a kill can land right after the queue recorded a
	// delivery, leaving nothing to publish again.
	t.Logf("publications the stream dropped as duplicates after restarts (logged batches): %d", strings.Count(string(log), "stream already had some messages"))
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}
