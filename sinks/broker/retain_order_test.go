package broker

import (
	"fmt"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

// TestSinkRetainedValueNeverGoesBackInTime: a message older (by its
// timestamp) than what was published on its topics is delivered to
// subscribers, without retain; a late subscriber still gets the newest
// value retained. Any order of delivery: a late upload or a live_first
// backlog.
func TestSinkRetainedValueNeverGoesBackInTime(t *testing.T) {
	srv := startServer(t, Config{AllowAnonymous: true})
	s, _ := newSink(t, srv, SinkConfig{Retain: true, Values: true})
	body := func(ts string, temp int) string {
		return fmt.Sprintf(`{"deviceId":"D1","timestamp":%q,"payload":{"temperature":%d}}`, ts, temp)
	}
	topic := "wittra/p/D1/temperature"
	on := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), topic, 1)

	publish(t, s, msg("p", "D1", sinks.KindData, body("2026-03-01T10:00:00Z", 30)))
	publish(t, s, msg("p", "D1", sinks.KindData, body("2026-03-01T09:00:00Z", 20))) // older: a backlog message
	for _, want := range []testutil.Received{{Topic: topic, Payload: "30", Retain: false}, {Topic: topic, Payload: "20", Retain: false}} {
		got := on.Next(t, waitLong)
		for got.Retain {
			// The broker's on-subscribe copy of the first value, when its
			// publication raced the SUBACK: not what this checks.
			got = on.Next(t, waitLong)
		}
		if got.Topic != want.Topic || got.Payload != want.Payload {
			t.Fatalf("subscriber got %+v, want %+v (the older message still goes out)", got, want)
		}
	}

	late := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), topic, 1)
	if got := late.Next(t, waitLong); got.Payload != "30" || !got.Retain {
		t.Fatalf("late subscriber got %+v, want the newest value 30 retained", got)
	}
	late.Quiet(t, 200*time.Millisecond)

	publish(t, s, msg("p", "D1", sinks.KindData, body("2026-03-01T11:00:00Z", 40)))
	later := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), topic, 1)
	if got := later.Next(t, waitLong); got.Payload != "40" || !got.Retain {
		t.Fatalf("later subscriber got %+v, want the newer value 40 retained", got)
	}
}
