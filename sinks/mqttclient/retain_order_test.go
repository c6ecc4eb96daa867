package mqttclient

import (
	"fmt"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

// TestRetainedValueNeverGoesBackInTime: with retain, a message older (by
// its timestamp) than what went out on its topics reaches subscribers
// without the retain flag, so mosquitto keeps the newest value for late
// subscribers (a late upload in in_order; a backlog in live_first).
func TestRetainedValueNeverGoesBackInTime(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{})
	s, _ := newSink(t, Config{URL: m.URL(), QoS: 1, Retain: true, Values: true})
	waitConnected(t, s)
	at := func(ts string, temp int) sinks.Message {
		body := fmt.Sprintf(`{"deviceId":"D1","timestamp":%q,"payload":{"temperature":%d}}`, ts, temp)
		return sinks.Message{Seq: seq.Add(1), Received: time.Now(), Project: testProject, Device: "D1", Kind: sinks.KindData, Body: []byte(body)}
	}
	topic := DefaultTopicPrefix + "/" + testProject + "/D1/temperature"
	on := testutil.Subscribe(t, m.URL(), topic, 1, testutil.SubscriberOptions{})
	publishAll(t, s, []sinks.Message{at("2026-03-01T10:00:00Z", 30), at("2026-03-01T09:00:00Z", 20)})
	on.WaitFor(t, waitLong, "both values at the subscriber", func(r []testutil.Received) bool {
		return len(r) == 2 && r[0].Payload == "30" && r[1].Payload == "20"
	})
	late := testutil.Subscribe(t, m.URL(), topic, 1, testutil.SubscriberOptions{})
	late.WaitFor(t, waitLong, "the retained value", func(r []testutil.Received) bool { return len(r) > 0 })
	time.Sleep(200 * time.Millisecond) // anything more would come right after
	if got := late.Messages(); len(got) != 1 || got[0].Payload != "30" || !got[0].Retain {
		t.Fatalf("late subscriber got %+v, want only the newest value 30 retained", got)
	}
}
