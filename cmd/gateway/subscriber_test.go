package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
)

// TestDurableSubscriberAcrossRestarts: a durable subscriber (type
// subscriber) is away while messages are posted and the gateway is stopped
// once with SIGTERM and once with SIGKILL; when it comes back (clean
// session: the promise does not depend on the broker keeping its session)
// it receives every message that got a 200, in per-device order.
func TestDurableSubscriberAcrossRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess restart test; skipped with -short")
	}
	t.Parallel()
	const (
		devices   = 4
		perDevice = 60 // per device and phase
	)
	addrs := testutil.FreeAddrs(t, 3)
	webhook, admin, brokerAddr := addrs[0], addrs[1], addrs[2]
	proc := newGatewayProc(t, "durable-gw", webhook, admin, "queue.db", fmt.Sprintf(`broker: {listeners: [{type: tcp, address: %s}]}
sinks:
  - {name: historian, type: subscriber, client_id: historian, topic_prefix: wittra, qos: 1}
`, brokerAddr))
	url := "http://" + webhook + "/wittra"
	mqttURL := "tcp://" + brokerAddr
	hc := outageHTTPClient(t, devices)

	var acked testutil.IDSet
	var seq [devices]int64
	post := func(phase string) {
		var wg sync.WaitGroup
		for d := range devices {
			wg.Add(1)
			go func() { // one device's messages in order, devices in parallel
				defer wg.Done()
				for range perDevice {
					seq[d]++
					id := fmt.Sprintf("%s-%d-%d", phase, d, seq[d])
					code, body, _, err := testutil.Post(hc, url, outageBody(outageDevice(d), id, seq[d]))
					if err != nil || code != 200 {
						t.Errorf("post %s: %d %s %v", id, code, body, err)
						return
					}
					acked.Add(id)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}

	g := proc.start(t, webhook, brokerAddr)
	post("away-1")
	g.StopClean(t, exitTimeout)
	g = proc.start(t, webhook, brokerAddr)
	post("away-2")
	g.Kill9(t)
	g.WaitKilled(t, 10*time.Second)
	g = proc.start(t, webhook, brokerAddr)
	post("away-3")

	if m := outageScrape("http://" + admin); metricValue(m, `wittra_gateway_sink_connected{sink="historian"}`) != 0 {
		t.Fatalf("sink_connected = %v with no client", metricValue(m, `wittra_gateway_sink_connected{sink="historian"}`))
	}
	sub := outageSubscribe(t, mqttURL, "historian", false)
	want := acked.List()
	outageWait(t, 60*time.Second, "every acknowledged message at the durable subscriber", func() bool {
		return len(sub.missing(want)) == 0
	})
	if bad := sub.orderViolations(); len(bad) > 0 {
		t.Fatalf("per-device order violated: %v", bad[:min(5, len(bad))])
	}
	if n, sample := sub.badSummary(); n > 0 {
		t.Fatalf("%d unexpected messages, e.g. %s", n, sample)
	}
	unique, total, repeated, _ := sub.figures()
	t.Logf("%d acknowledged, %d received (%d distinct, %d repeated)", len(want), total, unique, repeated)
	outageWait(t, 20*time.Second, "queue depth 0 and sink_connected 1", func() bool {
		m := outageScrape("http://" + admin)
		return metricValue(m, `wittra_gateway_queue_depth_messages{sink="historian"}`) == 0 &&
			metricValue(m, `wittra_gateway_sink_connected{sink="historian"}`) == 1
	})
	g.StopClean(t, exitTimeout)
	if b, _ := os.ReadFile(proc.logPath); strings.Contains(string(b), `"level":"error"`) {
		t.Logf("errors in the log:\n%s", testutil.FileTail(proc.logPath, 8<<10))
	}
}
