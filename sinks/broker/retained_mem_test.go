package broker

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/wmsg"
	"wittra-gateway/sinks"
)

// BenchmarkRetainedHeapPerDevice publishes b.N distinct devices (full
// Wittra messages: /data plus a dozen value topics, retained) into a broker
// sink and reports the live heap each device adds. For a heap profile:
//
//	go test -run '^$' -bench RetainedHeapPerDevice -benchtime 10000x -memprofile heap.prof ./sinks/broker
func BenchmarkRetainedHeapPerDevice(b *testing.B) {
	srv, err := New(Config{Listeners: []Listener{{Address: "127.0.0.1:0"}}}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	s, err := NewSink(srv, SinkConfig{GatewayID: "gw", Values: true, Retain: true}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	spec := wmsg.Spec{Run: wmsg.NewRunID(time.Now()), Devices: max(b.N, 1), Shape: wmsg.ShapeFull}
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	var body []byte
	for i := 0; i < b.N; i++ {
		body = spec.Append(body[:0], uint64(i), time.Now())
		m := sinks.Message{Seq: uint64(i), Project: "P4nB8vQ2wE6rT1yU3iOa", Device: string(wmsg.DeviceID(nil, i)),
			Body: append([]byte(nil), body...)}
		if _, err := s.Publish(context.Background(), []sinks.Message{m}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	st := srv.RetainedStats()
	if st.Devices < b.N {
		b.Fatalf("retained devices = %d, want ≥ %d", st.Devices, b.N)
	}
	b.ReportMetric(float64(int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc))/float64(b.N), "heapB/device")
	b.ReportMetric(float64(st.Topics)/float64(st.Devices), "topics/device")
}
