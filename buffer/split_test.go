package buffer

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

func reader(t *testing.T, q *Queue, name string) *Reader {
	t.Helper()
	r, err := q.Reader(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func seqs(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func wantSeqs(t *testing.T, what string, recs []Record, from, to uint64) {
	t.Helper()
	got := seqs(recs)
	if len(got) != int(to-from+1) {
		t.Fatalf("%s: got %v, want %d..%d", what, got, from, to)
	}
	for i, s := range got {
		if s != from+uint64(i) {
			t.Fatalf("%s: got %v, want %d..%d", what, got, from, to)
		}
	}
}

func metaValue(t *testing.T, q *Queue, key string) []byte {
	t.Helper()
	var v []byte
	if err := q.view(func(tx *bolt.Tx) error {
		v = append([]byte(nil), tx.Bucket(bucketMeta).Get([]byte(key))...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(v) == 0 {
		return nil
	}
	return v
}

// TestSplitSurvivesRestartAndJoins: a backlog of 100, 30 live messages of
// which 20 acknowledged, the backlog half acknowledged; after a reopen each
// stream resumes after its own acknowledged part, and draining the backlog
// joins the runs and deletes what everybody has.
func TestSplitSurvivesRestartAndJoins(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openQueue(t, Config{Path: path, Consumers: []string{"a", "b"}})
	appendN(t, q, 0, 100)
	r := reader(t, q, "a")
	if made, err := r.Split(ctx); err != nil || !made {
		t.Fatalf("Split = %v, %v", made, err)
	}
	if made, _ := r.Split(ctx); made {
		t.Fatal("a second split was made while one exists")
	}
	appendN(t, q, 100, 30)
	live, err := r.ReadLive(20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, "live", live, 101, 120)
	back, err := r.ReadBacklog(50, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, "backlog", back, 1, 50)
	if err := r.Ack(ctx, 120); err != nil {
		t.Fatal(err)
	}
	if err := r.Ack(ctx, 50); err != nil {
		t.Fatal(err)
	}
	if got := r.SplitState(); got != (SplitState{Active: true, Cursor: 50, At: 100, Live: 120}) {
		t.Fatalf("split state %+v", got)
	}
	// The cursor key keeps its meaning: everything up to it is acknowledged.
	if v := metaValue(t, q, cursorPrefix+"a"); len(v) != 8 || v[7] != 50 {
		t.Fatalf("cursor/a = %v, want 50", v)
	}
	st, err := q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	a := st.Consumers[0]
	if a.Backlog != 50 || a.Live != 10 || a.Depth != 60 || a.OldestAge < 0 || a.Oldest.IsZero() {
		t.Fatalf("stats of a: %+v", a)
	}
	if b := st.Consumers[1]; b.Backlog != 130 || b.Live != 0 || b.Depth != 130 {
		t.Fatalf("stats of b: %+v", b)
	}
	q.Close()

	q = openQueue(t, Config{Path: path, Consumers: []string{"a", "b"}})
	r = reader(t, q, "a")
	if got := r.SplitState(); got != (SplitState{Active: true, Cursor: 50, At: 100, Live: 120}) {
		t.Fatalf("split state after reopen %+v", got)
	}
	live, _ = r.ReadLive(100, 1<<20)
	wantSeqs(t, "live after reopen", live, 121, 130)
	back, _ = r.ReadBacklog(100, 1<<20)
	wantSeqs(t, "backlog after reopen", back, 51, 100)
	if more, _ := r.ReadBacklog(100, 1<<20); len(more) != 0 {
		t.Fatalf("backlog read past the split: %v", seqs(more))
	}
	if err := r.Ack(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if got := r.SplitState(); got != (SplitState{Cursor: 120}) {
		t.Fatalf("after the backlog drained: %+v, want joined at 120", got)
	}
	if v := metaValue(t, q, splitPrefix+"a"); v != nil {
		t.Fatalf("split key left after the join: %v", v)
	}
	if err := r.Ack(ctx, 130); err != nil {
		t.Fatal(err)
	}
	// b still holds everything; once it has all, the file is emptied.
	rb := reader(t, q, "b")
	readAll(t, rb, 130)
	if err := rb.Ack(ctx, 130); err != nil {
		t.Fatal(err)
	}
	if st, _ := q.Stats(); st.Messages != 0 {
		t.Fatalf("%d messages left after both consumers had all", st.Messages)
	}
}

// TestSplitIgnoredOnlyResends: a binary that knows nothing of split keys
// (simulated by deleting the key) reads from the backlog cursor: the live
// messages already delivered come again, nothing is skipped.
func TestSplitIgnoredOnlyResends(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openQueue(t, Config{Path: path})
	appendN(t, q, 0, 10)
	r := reader(t, q, "a")
	r.Split(ctx)
	appendN(t, q, 10, 5)
	live, _ := r.ReadLive(100, 1<<20)
	wantSeqs(t, "live", live, 11, 15)
	r.Ack(ctx, 15)
	back, _ := r.ReadBacklog(3, 1<<20)
	wantSeqs(t, "backlog", back, 1, 3)
	r.Ack(ctx, 3)
	q.Close()

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete([]byte(splitPrefix + "a")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	q = openQueue(t, Config{Path: path})
	recs := readAll(t, reader(t, q, "a"), 12)
	wantSeqs(t, "without the split key", recs, 4, 15)
}

// TestInOrderReaderHonoursALeftoverSplit: a sink switched back to in_order
// with a split on file reads the backlog, then what follows the live
// cursor, without sending the acknowledged live messages again.
func TestInOrderReaderHonoursALeftoverSplit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openQueue(t, Config{Path: path})
	appendN(t, q, 0, 10)
	r := reader(t, q, "a")
	r.Split(ctx)
	appendN(t, q, 10, 10)
	live, _ := r.ReadLive(5, 1<<20)
	r.Ack(ctx, live[len(live)-1].Seq)
	q.Close()

	q = openQueue(t, Config{Path: path})
	r = reader(t, q, "a")
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	first, err := r.Read(cctx, 1000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, "first batch (the backlog, alone)", first, 1, 10)
	if err := r.Ack(ctx, 10); err != nil {
		t.Fatal(err)
	}
	second, err := r.Read(cctx, 1000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, "second batch", second, 16, 20)
	if err := r.Ack(ctx, 20); err != nil {
		t.Fatal(err)
	}
	if got := r.SplitState(); got != (SplitState{Cursor: 20}) {
		t.Fatalf("state %+v", got)
	}
}

// TestExpiryOfTheWholeBacklogJoins: max_age deleting the whole backlog
// joins the runs; a live message is never read twice or skipped.
func TestExpiryOfTheWholeBacklogJoins(t *testing.T) {
	ctx := context.Background()
	q := openQueue(t, Config{MaxBytes: 1 << 20, WhenFull: DropOldest})
	appendN(t, q, 0, 10)
	r := reader(t, q, "a")
	r.Split(ctx)
	appendN(t, q, 10, 10)
	live, _ := r.ReadLive(4, 1<<20)
	wantSeqs(t, "live", live, 11, 14)
	r.Ack(ctx, 14)
	n, err := q.Purge(ctx)
	if err != nil || n != 20 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	if got := r.SplitState(); got.Active || got.Cursor != 20 {
		t.Fatalf("after purge: %+v", got)
	}
	appendN(t, q, 20, 3)
	recs, _ := r.ReadLive(100, 1<<20)
	wantSeqs(t, "after the join", recs, 21, 23)
}

// TestSalvageKeepsTheSplit: a salvaged file keeps split points read with
// the cursors, so nothing delivered live is sent again and nothing is lost.
func TestSalvageKeepsTheSplit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "queue.db")
	q := openQueue(t, Config{Path: src})
	appendN(t, q, 0, 20)
	r := reader(t, q, "a")
	r.Split(ctx)
	appendN(t, q, 20, 10)
	live, _ := r.ReadLive(5, 1<<20)
	r.Ack(ctx, live[len(live)-1].Seq)
	back, _ := r.ReadBacklog(5, 1<<20)
	r.Ack(ctx, back[len(back)-1].Seq)
	q.Close()

	dst := filepath.Join(dir, "salvaged.db")
	if _, err := Salvage(src, dst, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	q = openQueue(t, Config{Path: dst})
	r = reader(t, q, "a")
	if got := r.SplitState(); got != (SplitState{Active: true, Cursor: 5, At: 20, Live: 25}) {
		t.Fatalf("after salvage: %+v", got)
	}
	back, _ = r.ReadBacklog(100, 1<<20)
	wantSeqs(t, "backlog", back, 6, 20)
	live, _ = r.ReadLive(100, 1<<20)
	wantSeqs(t, "live", live, 26, 30)
}

// TestCompactionKeepsTheSplit: the meta bucket is copied whole.
func TestCompactionKeepsTheSplit(t *testing.T) {
	ctx := context.Background()
	q := openQueue(t, Config{})
	appendN(t, q, 0, 20)
	r := reader(t, q, "a")
	r.Split(ctx)
	appendN(t, q, 20, 5)
	live, _ := r.ReadLive(100, 1<<20)
	r.Ack(ctx, live[len(live)-1].Seq)
	if err := q.Compact(); err != nil {
		t.Fatal(err)
	}
	if v := metaValue(t, q, splitPrefix+"a"); len(v) != 16 {
		t.Fatalf("split key after compaction: %v", v)
	}
	if got := r.SplitState(); got != (SplitState{Active: true, At: 20, Live: 25}) {
		t.Fatalf("after compaction: %+v", got)
	}
}

// TestRemovedConsumerLosesItsSplit: a split of a consumer no longer
// configured goes with its cursor.
func TestRemovedConsumerLosesItsSplit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openQueue(t, Config{Path: path, Consumers: []string{"a", "b"}})
	appendN(t, q, 0, 5)
	r := reader(t, q, "b")
	r.Split(ctx)
	q.Close()
	q = openQueue(t, Config{Path: path, Consumers: []string{"a"}})
	if v := metaValue(t, q, splitPrefix+"b"); v != nil {
		t.Fatalf("split of a removed consumer kept: %v", v)
	}
	q.Close()
	q = openQueue(t, Config{Path: path, Consumers: []string{"a", "b"}})
	if got := reader(t, q, "b").SplitState(); got.Active {
		t.Fatalf("re-added consumer inherited a split: %+v", got)
	}
}
