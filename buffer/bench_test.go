package buffer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures durable appends of 200-byte messages: MaxBatch 1
// is the one-fsync-per-message baseline, the default groups concurrent
// appends into one commit.
func BenchmarkAppend(b *testing.B) {
	data := make([]byte, 200)
	for _, mode := range []struct {
		name     string
		maxBatch int
	}{{"per-message", 1}, {"grouped", 0}} {
		for _, writers := range []int{1, 64} {
			for _, dedupWindow := range []time.Duration{24 * time.Hour, 0} {
				name := fmt.Sprintf("%s/writers=%d", mode.name, writers)
				if dedupWindow == 0 {
					name += "/nodedup"
				}
				b.Run(name, func(b *testing.B) {
					q := openQueue(b, Config{MaxBatch: mode.maxBatch, DedupWindow: dedupWindow})
					var n atomic.Int64
					b.ReportAllocs()
					b.ResetTimer()
					var wg sync.WaitGroup
					for range writers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for i := n.Add(1); i <= int64(b.N); i = n.Add(1) {
								if _, err := q.Append(context.Background(), []Entry{{Data: data, DedupKey: fmt.Sprint(i)}}); err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					b.StopTimer()
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
					st, _ := q.Stats()
					b.ReportMetric(float64(b.N)/float64(max(1, st.Commits)), "msgs/commit")
				})
			}
		}
	}
}
