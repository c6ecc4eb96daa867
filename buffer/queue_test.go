package buffer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"wittra-gateway/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openQueue(t testing.TB, cfg Config) *Queue {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "queue.db")
	}
	if cfg.Consumers == nil {
		cfg.Consumers = []string{"a"}
	}
	q, err := Open(cfg, zerolog.Nop())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func appendN(t testing.TB, q *Queue, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		res, err := q.Append(context.Background(), []Entry{{Data: []byte(fmt.Sprintf("m%d", i)), DedupKey: fmt.Sprintf("id%d", i)}})
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		if res.Accepted != 1 {
			t.Fatalf("Append %d accepted %d, want 1", i, res.Accepted)
		}
	}
}

// appendBatches appends entry(0) … entry(n-1), batch at a time, and wants
// every one accepted.
func appendBatches(tb testing.TB, q *Queue, n, batch int, entry func(i int) Entry) {
	tb.Helper()
	for i := 0; i < n; i += batch {
		entries := make([]Entry, 0, batch)
		for j := i; j < min(n, i+batch); j++ {
			entries = append(entries, entry(j))
		}
		if res, err := q.Append(context.Background(), entries); err != nil || res.Accepted != len(entries) {
			tb.Fatalf("append from %d: %+v, %v", i, res, err)
		}
	}
}

func readAll(t testing.TB, r *Reader, want int) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []Record
	for len(out) < want {
		recs, err := r.Read(ctx, 1000, 1<<20)
		if err != nil {
			t.Fatalf("Read after %d of %d: %v", len(out), want, err)
		}
		out = append(out, recs...)
	}
	return out
}

func TestAppendReadAckInOrder(t *testing.T) {
	q := openQueue(t, Config{})
	appendN(t, q, 0, 50)
	r, err := q.Reader("a")
	if err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, r, 50)
	for i, rec := range recs {
		if got, want := string(rec.Data), fmt.Sprintf("m%d", i); got != want {
			t.Fatalf("record %d = %q, want %q", i, got, want)
		}
		if rec.Seq != uint64(i+1) {
			t.Fatalf("record %d seq = %d, want %d", i, rec.Seq, i+1)
		}
		if time.Since(rec.Time) > time.Minute || rec.Time.After(time.Now()) {
			t.Fatalf("record %d time = %v, not a receive time", i, rec.Time)
		}
	}
	if err := r.Ack(context.Background(), recs[29].Seq); err != nil {
		t.Fatal(err)
	}
	st, err := q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 20 || st.Consumers[0].Depth != 20 || st.Head != 31 {
		t.Fatalf("after ack: messages=%d depth=%d head=%d, want 20 20 31", st.Messages, st.Consumers[0].Depth, st.Head)
	}
	if st.Consumers[0].Oldest.IsZero() {
		t.Fatalf("oldest is zero with a backlog")
	}
}

func TestReaderResumesAfterRestartFromCursor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openQueue(t, Config{Path: path})
	appendN(t, q, 0, 10)
	r, _ := q.Reader("a")
	recs := readAll(t, r, 10)
	if err := r.Ack(context.Background(), recs[3].Seq); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q2 := openQueue(t, Config{Path: path})
	r2, _ := q2.Reader("a")
	recs = readAll(t, r2, 6)
	if got := string(recs[0].Data); got != "m4" {
		t.Fatalf("first record after restart = %q, want m4 (at-least-once from the cursor)", got)
	}
	appendN(t, q2, 10, 1)
	recs = readAll(t, r2, 1)
	if recs[0].Seq != 11 {
		t.Fatalf("sequence after restart = %d, want 11 (never reused)", recs[0].Seq)
	}
}

func TestDedup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openQueue(t, Config{Path: path, DedupWindow: time.Hour})
	ctx := context.Background()
	res, err := q.Append(ctx, []Entry{{Data: []byte("x"), DedupKey: "p1"}, {Data: []byte("x"), DedupKey: "p1"}, {Data: []byte("y"), DedupKey: "p2"}, {Data: []byte("z")}})
	if err != nil {
		t.Fatal(err)
	}
	if res != (AppendResult{Accepted: 3, Duplicates: 1}) {
		t.Fatalf("first append = %+v, want 3 accepted 1 duplicate", res)
	}
	q.Close()
	q = openQueue(t, Config{Path: path, DedupWindow: time.Hour})
	res, err = q.Append(ctx, []Entry{{Data: []byte("x"), DedupKey: "p1"}, {Data: []byte("z")}})
	if err != nil {
		t.Fatal(err)
	}
	if res != (AppendResult{Accepted: 1, Duplicates: 1}) {
		t.Fatalf("append after restart = %+v, want 1 accepted 1 duplicate", res)
	}
	long := string(make([]byte, 4000))
	for i := range 2 {
		res, err = q.Append(ctx, []Entry{{Data: []byte("l"), DedupKey: long}})
		if err != nil {
			t.Fatal(err)
		}
		if want := (AppendResult{Accepted: 1 - i, Duplicates: i}); res != want {
			t.Fatalf("long key append %d = %+v, want %+v", i, res, want)
		}
	}
}

func TestDedupWindowExpires(t *testing.T) {
	fc := clock.NewFake(time.Now())
	q := openQueue(t, Config{DedupWindow: time.Minute, Clock: fc})
	ctx := context.Background()
	if _, err := q.Append(ctx, []Entry{{Data: []byte("x"), DedupKey: "p1"}}); err != nil {
		t.Fatal(err)
	}
	fc.Advance(time.Minute + time.Second)
	if err := q.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := q.Append(ctx, []Entry{{Data: []byte("x"), DedupKey: "p1"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 1 {
		t.Fatalf("after the window: %+v, want accepted again", res)
	}
}

func TestWhenFullReject(t *testing.T) {
	q := openQueue(t, Config{MaxBytes: 5 * recordSize([]byte("m0"))})
	appendN(t, q, 0, 5)
	_, err := q.Append(context.Background(), []Entry{{Data: []byte("m5")}})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("append to a full queue: err = %v, want ErrFull", err)
	}
	st, _ := q.Stats()
	if st.Messages != 5 {
		t.Fatalf("messages = %d after a rejected append, want 5", st.Messages)
	}
	// Room comes back once the consumer acknowledges.
	r, _ := q.Reader("a")
	recs := readAll(t, r, 5)
	if err := r.Ack(context.Background(), recs[0].Seq); err != nil {
		t.Fatal(err)
	}
	appendN(t, q, 5, 1)
}

func TestWhenFullDropOldest(t *testing.T) {
	q := openQueue(t, Config{MaxBytes: 5 * recordSize([]byte("m0")), WhenFull: DropOldest, Consumers: []string{"a", "b"}})
	appendN(t, q, 0, 8)
	if got := q.Counters().Dropped; got != 3 {
		t.Fatalf("dropped = %d, want 3", got)
	}
	wantOldest(t, q, "b", 5, "m3")
}

// wantOldest reads n records as consumer and wants the first to be data.
func wantOldest(t *testing.T, q *Queue, consumer string, n int, data string) {
	t.Helper()
	r, _ := q.Reader(consumer)
	if got := string(readAll(t, r, n)[0].Data); got != data {
		t.Fatalf("oldest kept = %q, want %s", got, data)
	}
}

func TestMaxAgeExpiry(t *testing.T) {
	fc := clock.NewFake(time.Now())
	q := openQueue(t, Config{MaxAge: time.Minute, Clock: fc})
	appendN(t, q, 0, 3)
	fc.Advance(time.Minute + time.Second)
	appendN(t, q, 3, 2)
	if err := q.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := q.Counters().Expired; got != 3 {
		t.Fatalf("expired = %d, want 3", got)
	}
	wantOldest(t, q, "a", 2, "m3")
}

func TestConsumersAreIndependent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openQueue(t, Config{Path: path, Consumers: []string{"fast", "slow"}})
	appendN(t, q, 0, 10)
	fast, _ := q.Reader("fast")
	recs := readAll(t, fast, 10)
	if err := fast.Ack(context.Background(), recs[9].Seq); err != nil {
		t.Fatal(err)
	}
	st, _ := q.Stats()
	if st.Messages != 10 {
		t.Fatalf("messages = %d while slow has not acked, want 10", st.Messages)
	}
	slow, _ := q.Reader("slow")
	recs = readAll(t, slow, 10)
	if err := slow.Ack(context.Background(), recs[4].Seq); err != nil {
		t.Fatal(err)
	}
	st, _ = q.Stats()
	if st.Messages != 5 {
		t.Fatalf("messages = %d after slow acked 5, want 5", st.Messages)
	}
	q.Close()
	// Dropping the slow consumer from the config releases what it held.
	q = openQueue(t, Config{Path: path, Consumers: []string{"fast"}})
	st, _ = q.Stats()
	if st.Messages != 0 || len(st.Consumers) != 1 {
		t.Fatalf("after removing slow: messages=%d consumers=%d, want 0 1", st.Messages, len(st.Consumers))
	}
	q.Close()
	// A consumer added later starts with what is stored.
	q = openQueue(t, Config{Path: path, Consumers: []string{"fast", "new"}})
	appendN(t, q, 10, 2)
	nr, _ := q.Reader("new")
	if recs := readAll(t, nr, 2); string(recs[0].Data) != "m10" {
		t.Fatalf("new consumer first = %q, want m10", recs[0].Data)
	}
}

func TestSecondOpenFailsWithLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	openQueue(t, Config{Path: path})
	_, err := Open(Config{Path: path, Consumers: []string{"a"}, LockTimeout: 100 * time.Millisecond}, zerolog.Nop())
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: err = %v, want ErrLocked", err)
	}
}

func TestClosedQueue(t *testing.T) {
	q := openQueue(t, Config{})
	r, _ := q.Reader("a")
	readErr := make(chan error, 1)
	go func() {
		_, err := r.Read(context.Background(), 10, 1<<20)
		readErr <- err
	}()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked Read after Close: %v, want ErrClosed", err)
	}
	if _, err := q.Append(context.Background(), []Entry{{Data: []byte("x")}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestConcurrentAppendsShareCommits(t *testing.T) {
	q := openQueue(t, Config{})
	const writers, each = 32, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := q.Append(context.Background(), []Entry{{Data: []byte(fmt.Sprintf("%d-%d", w, i))}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st, _ := q.Stats()
	if st.Messages != writers*each {
		t.Fatalf("messages = %d, want %d", st.Messages, writers*each)
	}
	if st.Commits >= writers*each {
		t.Fatalf("commits = %d for %d concurrent appends: no grouping", st.Commits, writers*each)
	}
	t.Logf("%d appends in %d commits", writers*each, st.Commits)
}

func TestKVSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openQueue(t, Config{Path: path})
	kv := q.KV("c8y")
	if v, err := kv.Get("D1"); err != nil || v != nil {
		t.Fatalf("Get before Put = %q, %v; want nil, nil", v, err)
	}
	if err := kv.Put(context.Background(), "D1", []byte("123")); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = openQueue(t, Config{Path: path})
	if v, err := q.KV("c8y").Get("D1"); err != nil || string(v) != "123" {
		t.Fatalf("Get after restart = %q, %v; want 123", v, err)
	}
	if keys, _ := q.KV("c8y").Keys(); len(keys) != 1 || keys[0] != "D1" {
		t.Fatalf("Keys = %v, want [D1]", keys)
	}
	if v, _ := q.KV("other").Get("D1"); v != nil {
		t.Fatalf("namespaces leak: other/D1 = %q", v)
	}
}
