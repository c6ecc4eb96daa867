package buffer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"wittra-gateway/internal/clock"
	"wittra-gateway/internal/testutil"
)

// wedge blocks the committer inside a transaction until the returned
// function is called, as a stuck disk would.
func wedge(t *testing.T, q *Queue) (release func()) {
	t.Helper()
	entered, unblock := make(chan struct{}), make(chan struct{})
	go q.submit(context.Background(), &op{apply: func(*bolt.Tx, *state, *Counters) error {
		close(entered)
		<-unblock
		return nil
	}})
	<-entered
	var once sync.Once
	release = func() { once.Do(func() { close(unblock) }) }
	t.Cleanup(release)
	return release
}

// A wedged committer must not collect one goroutine per watchdog tick or
// /readyz request: concurrent pings share one round trip.
func TestPingWhileWedgedHoldsOneGoroutine(t *testing.T) {
	q := openQueue(t, Config{})
	release := wedge(t, q)
	before := runtime.NumGoroutine()
	for range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		err := q.Ping(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ping of a wedged committer: %v, want a deadline error", err)
		}
	}
	if grown := runtime.NumGoroutine() - before; grown > 2 {
		t.Fatalf("200 pings of a wedged committer left %d more goroutines, want at most 1", grown)
	}
	release()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.Ping(ctx); err != nil {
		t.Fatalf("ping after the committer recovered: %v", err)
	}
}

// Intake, acknowledgements, sweeps, reads, pings, dead letters and KV writes
// go on while a compaction copies the file; the switch-over brings all of
// it into the compacted file.
func TestCompactionDoesNotStopIntake(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	fc := clock.NewFake(time.Now())
	// No background sweeps: the test runs the compaction itself.
	q := openQueue(t, Config{Path: path, CompactMinSize: 1 << 20, DedupWindow: time.Hour, Consumers: []string{"a", "b"}, Clock: fc, SweepInterval: time.Hour})
	ctx := context.Background()
	data := make([]byte, 4000)
	appendBatches(t, q, 1500, 100, func(i int) Entry { return Entry{Data: data, DedupKey: fmt.Sprintf("old%d", i)} })
	ra, _ := q.Reader("a")
	rb, _ := q.Reader("b")
	for _, r := range []*Reader{ra, rb} {
		recs := readAll(t, r, 1500)
		if err := r.Ack(ctx, recs[1489].Seq); err != nil { // 10 left for the copy
			t.Fatal(err)
		}
	}
	if ok, size := q.needsCompaction(); !ok {
		t.Fatalf("file of %d bytes does not ask for compaction", size)
	}
	big := fileSize(t, path)

	copied, resume := make(chan struct{}), make(chan struct{})
	q.compactHook = func() {
		close(copied)
		<-resume
	}
	compacted := make(chan error, 1)
	go func() { compacted <- q.Compact() }()
	<-copied
	// The copy is done but not switched in: everything below must work
	// now. On a queue whose compaction holds the committer it would hang.
	during := make(chan error, 1)
	go func() {
		during <- func() error {
			res, err := q.Append(ctx, []Entry{{Data: []byte("dup"), DedupKey: "old5"}})
			if err != nil || res.Duplicates != 1 {
				return fmt.Errorf("append of a duplicate during the copy: %+v %v", res, err)
			}
			if err := q.Ping(ctx); err != nil {
				return err
			}
			if err := rb.Ack(ctx, 1495); err != nil { // b: 5 old ones left
				return err
			}
			fc.Advance(2 * time.Hour) // every old dedup key expires
			if err := q.Sweep(ctx); err != nil {
				return err
			}
			if _, err := q.Append(ctx, []Entry{{Data: []byte("during-1"), DedupKey: "new1"}, {Data: []byte("during-2"), DedupKey: "old7"}}); err != nil {
				return err
			}
			recs, err := ra.Read(ctx, 10, 1<<20) // a read up to 1500 before
			if err != nil {
				return err
			}
			if len(recs) != 2 || recs[1].Seq != 1502 {
				return fmt.Errorf("read during the copy: %d records", len(recs))
			}
			if err := ra.Ack(ctx, 1502); err != nil { // a has everything
				return err
			}
			if err := q.KV("c8y").Put(ctx, "D1", []byte("42")); err != nil {
				return err
			}
			return rb.DeadLetter(ctx, Record{Seq: 1496, Time: time.Now(), Data: data}, "refused during compaction")
		}()
	}()
	select {
	case err := <-during:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("intake, reads and pings waited for the compaction")
	}
	close(resume)
	if err := <-compacted; err != nil {
		t.Fatal(err)
	}
	if small := fileSize(t, path); small*4 > big {
		t.Fatalf("file %d bytes after compaction, was %d", small, big)
	}

	// The compacted file has everything that happened during the copy,
	// also after a restart.
	check := func(q *Queue) {
		t.Helper()
		var got []string
		q.Scan(0, func(r Record) bool {
			got = append(got, fmt.Sprintf("%d:%.8s", r.Seq, r.Data))
			return true
		})
		want := []string{"1496:\x00\x00\x00\x00\x00\x00\x00\x00", "1497:\x00\x00\x00\x00\x00\x00\x00\x00", "1498:\x00\x00\x00\x00\x00\x00\x00\x00", "1499:\x00\x00\x00\x00\x00\x00\x00\x00", "1500:\x00\x00\x00\x00\x00\x00\x00\x00", "1501:during-1", "1502:during-2"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("stored after compaction:\n got %q\nwant %q", got, want)
		}
		st, _ := q.Stats()
		if st.Consumers[0].Cursor != 1502 || st.Consumers[1].Cursor != 1495 || st.Bytes != 5*recordSize(data)+2*recordSize([]byte("during-1")) {
			t.Fatalf("after compaction: %+v", st)
		}
		if v, _ := q.KV("c8y").Get("D1"); string(v) != "42" {
			t.Fatalf("KV written during the copy = %q", v)
		}
		n := 0
		q.DeadLetters(func(DeadLetter) bool { n++; return true })
		if n != 1 {
			t.Fatalf("dead letters = %d, want the one written during the copy", n)
		}
		// new1 is within its window; the old keys were swept (old7 was
		// accepted again after the sweep, so it is recent too).
		for key, dup := range map[string]bool{"new1": true, "old7": true, "old9": false, "old1400": false} {
			res, err := q.Append(ctx, []Entry{{Data: []byte("probe"), DedupKey: key}})
			if err != nil || (res.Duplicates == 1) != dup {
				t.Fatalf("dedup key %s after compaction: %+v %v, want duplicate=%v", key, res, err, dup)
			}
		}
	}
	check(q)
	q.Close()
	// The probes stored old9 and old1400 again; after a restart the file
	// holds the same.
	q2 := openQueue(t, Config{Path: path, DedupWindow: time.Hour, Consumers: []string{"a", "b"}, Clock: fc})
	if st, _ := q2.Stats(); st.Last != 1504 || st.Messages != 9 {
		t.Fatalf("after restart: last %d messages %d, want 1504 9", st.Last, st.Messages)
	}
	if n := windowKeys(t, q2); n != 4 { // new1, old7, old9, old1400
		t.Fatalf("dedup keys %d after compaction, want 4", n)
	}
}

// The dedup sweep must keep pace with any intake: one sweep removes every
// expired key, however many, in bounded transactions.
func TestDedupSweepRemovesEveryExpiredKey(t *testing.T) {
	fc := clock.NewFake(time.Now())
	q := openQueue(t, Config{DedupWindow: time.Minute, Clock: fc})
	ctx := context.Background()
	const keys = 3*sweepBatch + 123
	appendBatches(t, q, keys, 1000, func(i int) Entry { return Entry{Data: []byte("x"), DedupKey: fmt.Sprintf("key-%d", i)} })
	fc.Advance(time.Minute + time.Second)
	commits := q.Counters().Commits
	if err := q.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if left, mem := windowKeys(t, q), q.dx.count.Load(); left != 0 || mem != 0 {
		t.Fatalf("after one sweep %d dedup keys on disk and %d in memory of %d expired ones are left", left, mem, keys)
	}
	if n := q.Counters().Commits - commits; n < 4 {
		t.Fatalf("the sweep of %d keys took %d transactions, want batches of at most %d", keys, n, sweepBatch)
	}
}

// The dead-letter cap holds exactly, also for dead letters committed in
// one batch (the bucket's Stats only see committed pages).
func TestDeadLetterCapHoldsWithinOneCommit(t *testing.T) {
	q := openQueue(t, Config{MaxDeadLetters: 5})
	appendN(t, q, 0, 20)
	r, _ := q.Reader("a")
	recs := readAll(t, r, 20)
	release := wedge(t, q)
	var wg sync.WaitGroup
	// Queued behind the wedge one after the other (so "newest" is the
	// order they are applied in), then committed together.
	deadline := time.Now().Add(30 * time.Second)
	for i, rec := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.DeadLetter(context.Background(), rec, "bad"); err != nil {
				t.Error(err)
			}
		}()
		testutil.Poll(time.Until(deadline), func() bool { return len(q.ops) >= i+1 })
	}
	release()
	wg.Wait()
	var seqs []uint64
	q.DeadLetters(func(d DeadLetter) bool { seqs = append(seqs, d.Seq); return true })
	if fmt.Sprint(seqs) != "[16 17 18 19 20]" {
		t.Fatalf("dead letters kept = %v, want the newest 5", seqs)
	}
	q.Close()
	q = openQueue(t, Config{Path: q.Path(), MaxDeadLetters: 5})
	q.mu.Lock()
	n := q.st.dead
	q.mu.Unlock()
	if n != 5 {
		t.Fatalf("dead letters counted at open = %d, want 5", n)
	}
}
