package sinks

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func valueMsg(device string, ts time.Time) Message {
	body := fmt.Sprintf(`{"deviceId":%q,"timestamp":%q,"payload":{"temperature":21.5}}`, device, ts.UTC().Format(time.RFC3339Nano))
	return Message{Project: "p", Device: device, Body: []byte(body), Received: time.Unix(0, 0)}
}

func marked(t *testing.T, g *RetainGuard, m Message) map[string]bool {
	t.Helper()
	pubs, err := Publications(nil, "w", m, true)
	if err != nil {
		t.Fatal(err)
	}
	g.Mark(pubs, m)
	out := map[string]bool{}
	for _, p := range pubs {
		out[p.Topic] = p.Retain
	}
	return out
}

// TestRetainGuardNeverGoesBackInTime: newer or equal messages are
// retained, older ones are not, per topic, by the message's own timestamp.
func TestRetainGuardNeverGoesBackInTime(t *testing.T) {
	g := NewRetainGuard(0)
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	if got := marked(t, g, valueMsg("D1", t0)); !got["w/p/D1/temperature"] || !got["w/p/D1/data"] {
		t.Fatalf("first message not retained: %v", got)
	}
	if got := marked(t, g, valueMsg("D1", t0.Add(-time.Minute))); got["w/p/D1/temperature"] || got["w/p/D1/data"] {
		t.Fatalf("older message retained: %v", got)
	}
	if got := marked(t, g, valueMsg("D1", t0)); !got["w/p/D1/temperature"] {
		t.Fatalf("a resend of the newest is not retained: %v", got)
	}
	if got := marked(t, g, valueMsg("D2", t0.Add(-time.Hour))); !got["w/p/D2/temperature"] {
		t.Fatalf("another device's topic is judged by D1's time: %v", got)
	}
	if got := marked(t, g, valueMsg("D1", t0.Add(time.Second))); !got["w/p/D1/temperature"] {
		t.Fatalf("newer message not retained: %v", got)
	}
	// Without a timestamp the receive time counts.
	m := Message{Project: "p", Device: "D3", Body: []byte(`{"deviceId":"D3","payload":{"x":1}}`), Received: t0}
	g.Mark(nil, m)
	if MessageTime(m) != t0 {
		t.Fatalf("MessageTime without timestamp = %v", MessageTime(m))
	}
	var nilGuard *RetainGuard
	pubs := []Publication{{Topic: "a"}}
	nilGuard.Mark(pubs, m)
	if pubs[0].Retain {
		t.Fatal("a nil guard (retain off) marked retain")
	}
}

// TestRetainGuardBoundKeepsTheRule: past its bound the guard forgets the
// older half, and a forgotten topic is still never set back in time.
func TestRetainGuardBoundKeepsTheRule(t *testing.T) {
	g := NewRetainGuard(100)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		marked(t, g, valueMsg(fmt.Sprintf("D%d", i), t0.Add(time.Duration(i)*time.Second)))
		if g.Len() > 100 {
			t.Fatalf("guard holds %d topics, bound 100", g.Len())
		}
	}
	// D0's topics were forgotten long ago: a value older than what was
	// published on them must not be retained.
	if got := marked(t, g, valueMsg("D0", t0.Add(-time.Second))); got["w/p/D0/temperature"] {
		t.Fatal("a forgotten topic went back in time")
	}
	// A message newer than everything forgotten is retained.
	if got := marked(t, g, valueMsg("D0", t0.Add(2000*time.Second))); !got["w/p/D0/temperature"] {
		t.Fatal("a newer value of a forgotten topic was not retained")
	}
}

// TestRetainGuardSeed: a seeded (already published) newer value keeps an
// older one from being retained.
func TestRetainGuardSeed(t *testing.T) {
	g := NewRetainGuard(0)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	newer := valueMsg("D1", t0)
	pubs, _ := Publications(nil, "w", newer, true)
	g.Seed(pubs, newer)
	if got := marked(t, g, valueMsg("D1", t0.Add(-time.Minute))); got["w/p/D1/temperature"] {
		t.Fatal("older value retained over a seeded newer one")
	}
}

// BenchmarkRetainGuardMemory reports the heap of a full guard
// (DefaultRetainGuardTopics topics).
func BenchmarkRetainGuardMemory(b *testing.B) {
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		g := NewRetainGuard(0)
		for i := range DefaultRetainGuardTopics {
			g.note(fmt.Sprintf("wittra/project/device-%07d/v%d", i/12, i%12), int64(i))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(g.Len()), "B/topic")
		runtime.KeepAlive(g)
	}
}
