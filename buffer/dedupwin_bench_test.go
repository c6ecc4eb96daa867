package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// writeFullWindow builds a queue file holding queued messages (~300 B)
// and a dedup window of ids keys (20-character Wittra-like ids), perRecord
// per commit record, all accepted within the last hour: what a gateway
// finds at start after a day of intake.
func writeFullWindow(b *testing.B, path string, ids, perRecord, queued int) {
	b.Helper()
	q, err := Open(Config{Path: path, Consumers: []string{"a"}, DedupWindow: 24 * time.Hour}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	q.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UnixNano()
	payload := make([]byte, 300)
	for start := 0; start < queued; start += 100_000 {
		err := db.Update(func(tx *bolt.Tx) error {
			m := tx.Bucket(bucketMsgs)
			m.FillPercent = appendFill
			for i := start; i < min(queued, start+100_000); i++ {
				seq, _ := m.NextSequence()
				v := binary.BigEndian.AppendUint64(nil, uint64(now))
				if err := m.Put(u64(seq), append(v, payload...)); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketMeta).Put(keyBytes, u64(uint64(min(queued, start+100_000)*(16+300))))
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	n := 0
	for n < ids {
		err := db.Update(func(tx *bolt.Tx) error {
			w := tx.Bucket(bucketDedupW)
			w.FillPercent = appendFill
			for r := 0; r < 50_000 && n < ids; r++ {
				seq, _ := w.NextSequence()
				var v []byte
				for j := 0; j < perRecord && n < ids; j++ {
					v = appendDedupID(v, fmt.Appendf(nil, "%011d-r%07d", uint64(n)*0x9E3779B97F4A7C15%99999999999, n%9999999))
					n++
				}
				g := now - int64(time.Hour) + int64(time.Hour)*int64(n)/int64(ids)
				if err := w.Put(dedupRecordKey(seq, g), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDedupStartup: Open (start-up) of a file with a full dedup
// window; reports the index's bytes per remembered id and the heap it
// adds. site-24h: 2,000 devices × 1 msg/min for 24 h, one commit per
// message; drain-1M: the bench's drain file (1M queued, 1M ids in
// commits of 1,000).
func BenchmarkDedupStartup(b *testing.B) {
	for _, c := range []struct {
		name                   string
		ids, perRecord, queued int
	}{
		{"site-24h-2000dev", 2000 * 1440, 1, 0},
		{"drain-1M-queued", 1_000_000, 1000, 1_000_000},
	} {
		b.Run(c.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "q.db")
			writeFullWindow(b, path, c.ids, c.perRecord, c.queued)
			cfg := Config{Path: path, Consumers: []string{"a"}, DedupWindow: 24 * time.Hour, SweepInterval: time.Hour}
			var heap uint64
			var cpu time.Duration
			b.ResetTimer()
			for range b.N {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				c0 := cpuTime()
				q, err := Open(cfg, zerolog.Nop())
				if err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - c0
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap = after.HeapAlloc - before.HeapAlloc
				if n, _ := q.DedupKeys(); n != c.ids {
					b.Fatalf("%d ids in the index, want %d", n, c.ids)
				}
				b.ReportMetric(float64(len(q.dx.slots)*8)/float64(q.dx.used), "B/id")
				runtime.KeepAlive(q)
				q.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// cpuTime is the CPU the process used so far (the machine is shared: wall
// time says more about the neighbours than about the code).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAppendRandomIDs: 64 concurrent writers append ~300-byte
// messages with random 20-character payloadIds (as the portal sends) and a
// 24 h window; reports the pages bbolt wrote per message.
func BenchmarkAppendRandomIDs(b *testing.B) {
	q := openQueue(b, Config{DedupWindow: 24 * time.Hour})
	data := make([]byte, 300)
	var n atomic.Int64
	st0 := q.db.Stats()
	w0 := st0.TxStats.GetWrite()
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := n.Add(1); i <= int64(b.N); i = n.Add(1) {
				id := fmt.Sprintf("%011d-r1234567", uint64(i)*0x9E3779B97F4A7C15%99999999999)
				if _, err := q.Append(context.Background(), []Entry{{Data: data, DedupKey: id}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(func() int64 { st := q.db.Stats(); return st.TxStats.GetWrite() }()-w0)*4096/1024/float64(b.N), "KiB-written/msg")
}
