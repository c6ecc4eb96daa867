package mqttclient

import (
	"fmt"
	"testing"
	"time"

	"wittra-gateway/sinks"
)

// TestRetainedValueNeverGoesBackInTime: with retain, a message older (by
// its timestamp) than what went out on its topics reaches subscribers
// without the retain flag, so mosquitto keeps the newest value for late
// subscribers (a late upload in in_order; a backlog in live_first).
func TestRetainedValueNeverGoesBackInTime(t *testing.T) {
	m := startMosquitto(t, mosqOpts{})
	s, _ := newSink(t, Config{URL: m.url(), QoS: 1, Retain: true, Values: true})
	waitConnected(t, s)
	at := func(ts string, temp int) sinks.Message {
		body := fmt.Sprintf(`{"deviceId":"D1","timestamp":%q,"payload":{"temperature":%d}}`, ts, temp)
		return sinks.Message{Seq: seq.Add(1), Received: time.Now(), Project: testProject, Device: "D1", Kind: sinks.KindData, Body: []byte(body)}
	}
	topic := DefaultTopicPrefix + "/" + testProject + "/D1/temperature"
	on := subscribe(t, m.url(), topic, 1, subOpts{})
	publishAll(t, s, []sinks.Message{at("2026-03-01T10:00:00Z", 30), at("2026-03-01T09:00:00Z", 20)})
	on.waitFor(t, waitLong, "both values at the subscriber", func(r []received) bool {
		return len(r) == 2 && r[0].payload == "30" && r[1].payload == "20"
	})
	late := subscribe(t, m.url(), topic, 1, subOpts{})
	late.waitFor(t, waitLong, "the retained value", func(r []received) bool { return len(r) > 0 })
	time.Sleep(200 * time.Millisecond) // anything more would come right after
	if got := late.snapshot(); len(got) != 1 || got[0].payload != "30" || !got[0].retain {
		t.Fatalf("late subscriber got %+v, want only the newest value 30 retained", got)
	}
}
