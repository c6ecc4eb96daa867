package bridge

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/sinks"
)

// countSink counts what it is handed and delivers all of it at once.
type countSink struct{ n atomic.Uint64 }

func (c *countSink) Name() string                { return "count" }
func (c *countSink) Close(context.Context) error { return nil }
func (c *countSink) Publish(_ context.Context, msgs []sinks.Message) (int, error) {
	c.n.Add(uint64(len(msgs)))
	return len(msgs), nil
}

// BenchmarkForwarderDrain drains 50,000 queued messages through each
// backlog mode to a sink that costs nothing: what the modes themselves cost
// (reads, acknowledgements, commits).
func BenchmarkForwarderDrain(b *testing.B) {
	const n = 50_000
	for _, mode := range []Backlog{InOrder, LiveFirst} {
		b.Run(mode.String(), func(b *testing.B) {
			var total time.Duration
			for range b.N {
				b.StopTimer()
				q, err := buffer.Open(buffer.Config{Path: filepath.Join(b.TempDir(), "q.db"), Consumers: []string{"s"}}, zerolog.Nop())
				if err != nil {
					b.Fatal(err)
				}
				entries := make([]buffer.Entry, 0, 1000)
				for i := 0; i < n; i += 1000 {
					entries = entries[:0]
					for j := range 1000 {
						body := fmt.Appendf(nil, `{"deviceId":"D%d","n":%d}`, (i+j)%1000, i+j)
						entries = append(entries, buffer.Entry{Data: appendEnvelope(nil, sinks.KindData, "p", fmt.Sprintf("D%d", (i+j)%1000), body)})
					}
					if _, err := q.Append(context.Background(), entries); err != nil {
						b.Fatal(err)
					}
				}
				r, _ := q.Reader("s")
				sink := &countSink{}
				f := NewForwarder(ForwarderConfig{Backlog: mode}, r, sink, zerolog.Nop())
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				b.StartTimer()
				began := time.Now()
				go func() { done <- f.Run(ctx) }()
				for sink.n.Load() < n {
					time.Sleep(time.Millisecond)
				}
				total += time.Since(began)
				b.StopTimer()
				cancel()
				<-done
				q.Close()
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "msg/s")
		})
	}
}
