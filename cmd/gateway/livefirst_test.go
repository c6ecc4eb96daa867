//go:build unix

package main

// `backlog: live_first` end to end: the gateway binary as a subprocess, an
// mqtt sink to Debian's mosquitto, a persistent subscriber that records
// every arrival with its time, and fresh subscribers reading retained
// values. Helpers from outage_test.go and helpers_test.go.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"wittra-gateway/internal/testutil"
)

const lfProject = "lf"

// lfBase is the measurement time of every device's seq 0: each message is
// one second newer than the one before it on its device.
var lfBase = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// lfTemp is the temperature a message carries: its seq, plus 1,000,000 for
// messages posted live, so a retained value tells which message it is.
func lfTemp(tag string, seq int64) int64 {
	if tag == "live" {
		return 1_000_000 + seq
	}
	return seq
}

func lfBody(device, tag string, seq int64) string {
	return fmt.Sprintf(`{"deviceId":%q,"projectId":%q,"payloadId":"%s-%s-%06d","payloadType":"DATA","timestamp":%q,"tag":%q,"seq":%d,"payload":{"temperature":%d}}`,
		device, lfProject, tag, device, seq, lfBase.Add(time.Duration(seq)*time.Second).Format(time.RFC3339Nano), tag, seq, lfTemp(tag, seq))
}

// lfArrival is one data message at the subscriber.
type lfArrival struct {
	ID     string `json:"payloadId"`
	Device string `json:"deviceId"`
	Tag    string `json:"tag"`
	Seq    int64  `json:"seq"`
	at     time.Time
}

// lfSub records every arrival on the data topics, in order, with its time.
type lfSub struct {
	mu    sync.Mutex
	all   []lfArrival
	count map[string]int
	bad   int
}

func (s *lfSub) handle(_ paho.Client, m paho.Message) {
	var a lfArrival
	err := json.Unmarshal(m.Payload(), &a)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || a.ID == "" {
		s.bad++
		return
	}
	a.at = time.Now()
	s.all = append(s.all, a)
	s.count[a.ID]++
}

func lfSubscribe(t *testing.T, url, id string) *lfSub {
	t.Helper()
	s := &lfSub{count: map[string]int{}}
	testutil.Subscribe(t, url, "wittra/+/+/data", 1, testutil.SubscriberOptions{
		ClientID: id, Persistent: true, Reconnect: true, Handler: s.handle})
	return s
}

// figures: distinct backlog ids arrived, distinct live ids arrived.
func (s *lfSub) figures() (backlog, live int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.count {
		if strings.HasPrefix(id, "live-") {
			live++
		} else {
			backlog++
		}
	}
	return backlog, live
}

// liveOf counts the distinct live ids of device that arrived.
func (s *lfSub) liveOf(device string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id := range s.count {
		if strings.HasPrefix(id, "live-"+device+"-") {
			n++
		}
	}
	return n
}

// retained reads the retained message of topic with a fresh clean-session
// client ("" when the broker holds none).
func lfRetained(t *testing.T, url, topic string) string {
	t.Helper()
	sub := testutil.Subscribe(t, url, topic, 1, testutil.SubscriberOptions{})
	defer sub.Client.Disconnect(50)
	var v string
	testutil.Poll(2*time.Second, func() bool { // retained messages come right after SUBACK
		i := slices.IndexFunc(sub.Messages(), func(m testutil.Received) bool { return m.Retain })
		if i >= 0 {
			v = sub.Messages()[i].Payload
		}
		return i >= 0
	})
	return v
}

// TestLiveFirstOutageDrainKill9: mosquitto is down while 8 devices post
// 4,800 messages; it comes back while the same devices post live. With
// `backlog: live_first` live messages arrive while the backlog is still
// draining; a fresh subscriber of a backlogged device's value topic sees a
// live value, never a backlog one; the gateway is killed with SIGKILL
// mid-drain and restarted; every acknowledged message arrives and each
// stream keeps per-device order; once drained, every device's retained
// value is its newest.
func TestLiveFirstOutageDrainKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test; skipped with -short")
	}
	const devices, perDevice, chunk = 8, 600, 50
	m := outageNewMosq(t)
	m.Start()
	sub := lfSubscribe(t, m.URL(), "lf-sub")
	if !m.Stop(syscall.SIGTERM) {
		t.Fatal("mosquitto needed SIGKILL; the subscriber's session was not saved")
	}

	addrs := testutil.FreeAddrs(t, 2)
	webhookAddr, adminAddr := addrs[0], addrs[1]
	g := newGatewayProc(t, "lf-gw", webhookAddr, adminAddr, "queue.db", "broker: {enabled: false}\nsinks: [{name: plant, type: mqtt, url: "+
		yamlString(m.URL())+", qos: 1, topic_prefix: wittra, values: true, retain: true, backlog: live_first}]\n")
	url := "http://" + webhookAddr + "/wittra"
	p := g.start(t, webhookAddr, adminAddr)
	client := outageHTTPClient(t, devices)
	metric := func(name string) float64 {
		return metricValue(outageScrape("http://"+adminAddr), "wittra_gateway_"+name+`{sink="plant"}`)
	}

	dev := func(d int) string { return fmt.Sprintf("LF%02d", d) }
	var acked testutil.IDSet
	// The backlog: each device's messages in order, 50 per request.
	var wg sync.WaitGroup
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for from := int64(1); from <= perDevice; from += chunk {
				var bodies, ids []string
				for s := from; s < from+chunk; s++ {
					bodies = append(bodies, lfBody(dev(d), "backlog", s))
					ids = append(ids, fmt.Sprintf("backlog-%s-%06d", dev(d), s))
				}
				code, reply, _, err := testutil.Post(client, url, "["+strings.Join(bodies, ",")+"]")
				if err != nil || code != 200 {
					t.Errorf("backlog post: %d %s %v", code, reply, err)
					return
				}
				acked.Add(ids...)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	backlogN := devices * perDevice

	// Live: every device posts one message every 20 ms until stopped.
	var liveSeq [devices]atomic.Int64
	var lastLive [devices]atomic.Int64 // newest live seq acknowledged per device
	var lastPosted [devices]atomic.Int64
	postedAt := sync.Map{} // id → time.Time
	live := func(stop *atomic.Bool) *sync.WaitGroup {
		var wg sync.WaitGroup
		for d := range devices {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					seq := perDevice + liveSeq[d].Add(1)
					id := fmt.Sprintf("live-%s-%06d", dev(d), seq)
					postedAt.Store(id, time.Now())
					lastPosted[d].Store(seq)
					code, _, _, err := testutil.Post(client, url, lfBody(dev(d), "live", seq))
					if err == nil && code == 200 {
						acked.Add(id)
						lastLive[d].Store(seq)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
		return &wg
	}

	m.Start()
	// The split point is placed once the sink delivers again: messages
	// accepted before it are backlog, whatever the poster meant. Live
	// posting starts after it so the test knows each message's stream.
	outageWait(t, 60*time.Second, "the backlog split", func() bool {
		return strings.Contains(testutil.FileTail(g.logPath, 1<<20), "delivering new messages first")
	})
	var stop1 atomic.Bool
	posters := live(&stop1)
	outageWait(t, 60*time.Second, "a live message at the subscriber", func() bool { _, l := sub.figures(); return l > 0 })
	backAtFirstLive, _ := sub.figures()
	if backAtFirstLive >= backlogN {
		t.Fatalf("the first live message arrived after the whole backlog (%d of %d)", backAtFirstLive, backlogN)
	}
	// A fresh subscriber mid-drain sees a live value of device 0.
	outageWait(t, 30*time.Second, "two live messages of device 0", func() bool { return sub.liveOf(dev(0)) >= 2 })
	back, _ := sub.figures()
	v := lfRetained(t, m.URL(), "wittra/"+lfProject+"/"+dev(0)+"/temperature")
	t.Logf("first live arrival with %d of %d backlog messages delivered; retained temperature of %s mid-drain (%d backlog delivered): %q",
		backAtFirstLive, backlogN, dev(0), back, v)
	if len(v) < 7 || v < "1000000" {
		t.Errorf("fresh subscriber mid-drain got retained temperature %q, want a live value (≥ 1000000)", v)
	}

	// Live traffic stops and every live message is acknowledged: after the
	// restart only the backlog is left, so only the guard's memory of what
	// went out live (seeded from the queue) keeps retained values current.
	stop1.Store(true)
	posters.Wait()
	outageWait(t, 30*time.Second, "the live stream acknowledged", func() bool { return metric("queue_live_messages") == 0 })
	backlogLeft, age := metric("queue_backlog_messages"), metric("queue_oldest_age_seconds")
	t.Logf("/metrics before the SIGKILL: backlog %.0f, live 0, oldest age %.1f s", backlogLeft, age)
	if backlogLeft <= 0 {
		t.Logf("the backlog had drained before the SIGKILL (machine fast): the restart still checks what was acknowledged")
	} else if age <= 0 {
		t.Errorf("queue_oldest_age_seconds %v with a backlog of %v", age, backlogLeft)
	}
	p.Kill9(t)
	p.WaitKilled(t, outageExitTimeout)
	client.CloseIdleConnections()

	// Restart without live traffic: the backlog drains after the live
	// messages already delivered, and must not set retained values back.
	p = g.start(t, webhookAddr, adminAddr)
	ids := acked.List()
	outageWait(t, 60*time.Second, "every acknowledged message at the subscriber", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		for _, id := range ids {
			if sub.count[id] == 0 {
				return false
			}
		}
		return true
	})

	// Order within each stream, per device, among first arrivals; live
	// delays while the backlog drained.
	sub.mu.Lock()
	seen := map[string]bool{}
	last := map[string]int64{}
	var violations []string
	var delays []time.Duration
	var lastBacklogAt time.Time
	for _, a := range sub.all {
		if a.Tag == "backlog" {
			lastBacklogAt = a.at
		}
	}
	for _, a := range sub.all {
		if seen[a.ID] {
			continue
		}
		seen[a.ID] = true
		k := a.Device + "/" + a.Tag
		if prev, ok := last[k]; ok && a.Seq <= prev {
			violations = append(violations, fmt.Sprintf("%s seq %d after %d", k, a.Seq, prev))
		}
		last[k] = a.Seq
		if a.Tag == "live" && a.at.Before(lastBacklogAt) {
			if at, ok := postedAt.Load(a.ID); ok {
				delays = append(delays, a.at.Sub(at.(time.Time)))
			}
		}
	}
	total, bad := len(sub.all), sub.bad
	sub.mu.Unlock()
	if len(violations) > 0 {
		t.Errorf("%d per-device order violations within a stream; first: %v", len(violations), violations[:min(5, len(violations))])
	}
	if bad > 0 {
		t.Errorf("%d unreadable messages on data topics", bad)
	}
	slices.Sort(delays)
	if len(delays) == 0 {
		t.Error("no live message arrived while the backlog drained")
	} else {
		t.Logf("%d live messages arrived while the backlog drained: delay p50 %v, p99 %v, max %v; %d arrivals for %d acknowledged ids",
			len(delays), delays[len(delays)/2], delays[len(delays)*99/100], delays[len(delays)-1], total, len(ids))
	}

	// Once drained, each device's retained temperature is its newest
	// (live) value, though older backlog messages went out after it.
	// A request cut by the SIGKILL may have been accepted without its
	// answer: the newest is then between the last answered and the last
	// posted.
	for d := range devices {
		lo, hi := lfTemp("live", lastLive[d].Load()), lfTemp("live", lastPosted[d].Load())
		if lastLive[d].Load() == 0 {
			lo = lfTemp("backlog", perDevice)
		}
		got := lfRetained(t, m.URL(), "wittra/"+lfProject+"/"+dev(d)+"/temperature")
		var n int64
		if _, err := fmt.Sscan(got, &n); err != nil || n < lo || n > hi {
			t.Errorf("%s: retained temperature after the drain %q, want the newest, %d..%d", dev(d), got, lo, hi)
		}
	}
	p.StopClean(t, exitTimeout)
}
