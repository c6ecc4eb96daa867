package buffer

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"wittra-gateway/internal/clock"
	"wittra-gateway/internal/testutil"
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

// BenchmarkDeadLetterAtCap: one dead letter into a full bucket
// (MaxDeadLetters stored), so each insert also drops the oldest.
func BenchmarkDeadLetterAtCap(b *testing.B) {
	path := b.TempDir() + "/q.db"
	q := openQueue(b, Config{Path: path})
	data := make([]byte, 200)
	err := q.db.Update(func(tx *bolt.Tx) error {
		dead, err := tx.CreateBucketIfNotExists(bucketDead)
		if err != nil {
			return err
		}
		dead.FillPercent = appendFill
		for i := range MaxDeadLetters {
			if err := dead.Put(append(u64(uint64(i+1)), 'a'), append(make([]byte, 17), data...)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	q.Close()
	q = openQueue(b, Config{Path: path})
	r, _ := q.Reader("a")
	b.ResetTimer()
	for i := range b.N {
		if err := r.DeadLetter(context.Background(), Record{Seq: uint64(MaxDeadLetters + i + 1), Data: data}, "bad"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDedupSweep: how fast a sweep forgets expired dedup keys
// (keys/s), to compare with the append rate.
func BenchmarkDedupSweep(b *testing.B) {
	fc := clock.NewFake(time.Now())
	q := openQueue(b, Config{DedupWindow: time.Minute, Clock: fc})
	entries := make([]Entry, 0, 1000)
	for i := 0; i < b.N; {
		entries = entries[:0]
		for ; len(entries) < 1000 && i < b.N; i++ {
			entries = append(entries, Entry{Data: []byte("x"), DedupKey: fmt.Sprintf("payload-%012d", i)})
		}
		if _, err := q.Append(context.Background(), entries); err != nil {
			b.Fatal(err)
		}
	}
	fc.Advance(2 * time.Minute)
	b.ResetTimer()
	if err := q.Sweep(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkCompactionUnderIntake compacts a file of 100,000 1 KiB messages
// with three quarters acknowledged while one writer appends: it reports how
// long the copy ran, how long writes were paused for the switch-over (from
// the compaction's log line) and the slowest append meanwhile.
func BenchmarkCompactionUnderIntake(b *testing.B) {
	for range b.N {
		var logs testutil.LogBuffer
		q, err := Open(Config{Path: b.TempDir() + "/q.db", Consumers: []string{"a"}, CompactMinSize: 1 << 20, SweepInterval: time.Hour, DedupWindow: time.Hour}, zerolog.New(&logs))
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		data := make([]byte, 1000)
		appendBatches(b, q, 100000, 500, func(i int) Entry { return Entry{Data: data, DedupKey: fmt.Sprint("k", i)} })
		r, _ := q.Reader("a")
		for read := 0; read < 75000; {
			recs, err := r.Read(ctx, 1000, 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			read += len(recs)
			if err := r.Ack(ctx, recs[len(recs)-1].Seq); err != nil {
				b.Fatal(err)
			}
		}
		var stop atomic.Bool
		var worst time.Duration
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; !stop.Load(); i++ {
				start := time.Now()
				if _, err := q.Append(ctx, []Entry{{Data: data, DedupKey: fmt.Sprint("live", i)}}); err != nil {
					b.Error(err)
					return
				}
				worst = max(worst, time.Since(start))
			}
		}()
		b.ResetTimer()
		if err := q.Compact(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		stop.Store(true)
		<-done
		q.Close()
		var line struct {
			Copy   string `json:"copy"` // durations, logged as text ("1.2s")
			Paused string `json:"writes_paused"`
		}
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "queue file compacted") {
				if err := json.Unmarshal([]byte(l), &line); err != nil {
					b.Fatalf("log line %s: %v", l, err)
				}
			}
		}
		copyTime, err1 := time.ParseDuration(line.Copy)
		paused, err2 := time.ParseDuration(line.Paused)
		if err1 != nil || err2 != nil {
			b.Fatalf("no compaction figures in the log: %q, %q", line.Copy, line.Paused)
		}
		b.ReportMetric(float64(copyTime.Milliseconds()), "copy-ms")
		b.ReportMetric(float64(paused.Milliseconds()), "paused-ms")
		b.ReportMetric(float64(worst.Milliseconds()), "worst-append-ms")
	}
}
