package devicetopics_test

import (
	"fmt"
	"runtime"
	"testing"

	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
)

// BenchmarkAdd is the cost per message of the state topic and discovery
// (after the first message of a device: no configs), on fixture f1.
func BenchmarkAdd(b *testing.B) {
	tp := newTopics(b, devicetopics.Options{State: true, Values: true, HomeAssistant: devicetopics.HomeAssistant{Enabled: true}})
	m := message(tag, fixture(b, "f1_data_tag.json"))
	var pubs []sinks.Publication
	b.ReportAllocs()
	for b.Loop() {
		pubs = tp.Add(pubs[:0], m)
	}
}

// BenchmarkMemoryPerDevice reports the heap one remembered device holds
// (f1's eleven keys), the figure behind DefaultMaxDevices.
func BenchmarkMemoryPerDevice(b *testing.B) {
	const n = 10_000
	body := fixture(b, "f1_data_tag.json")
	msgs := make([]sinks.Message, n)
	for i := range msgs {
		msgs[i] = message(fmt.Sprintf("D%016X", i), body)
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tp := newTopics(b, devicetopics.Options{State: true, Values: true, MaxDevices: n, HomeAssistant: devicetopics.HomeAssistant{Enabled: true}})
		for _, m := range msgs {
			tp.Add(nil, m)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/device")
		runtime.KeepAlive(tp)
	}
}
